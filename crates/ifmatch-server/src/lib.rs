//! # ifmatch-server
//!
//! The HTTP interface of ifmatch: conditional GET / HEAD / PUT / PATCH /
//! DELETE of versioned keys over any store, with standard HTTP preconditions
//! (RFC 9110 §13: `ETag`, `If-Match`, `If-None-Match`), so a browser, a
//! script or a Lambda function gets compare-and-swap with plain HTTP.
//!
//! The interface is thin: a handler parses the request, calls one function of
//! [`objects`] (which maps preconditions onto the store's conditional writes
//! and the update loop) or of a library primitive (leases, idempotency,
//! accounts, tenant databases) and renders the answer.
//!
//! ## Routes
//!
//! | method | path | what |
//! |---|---|---|
//! | GET, HEAD | `/v1/objects/{key}` | the value with its strong `ETag`; 304 on a matching `If-None-Match` |
//! | PUT | `/v1/objects/{key}` | write; 201 (created) or 200 (updated) with the new `ETag` |
//! | PATCH | `/v1/objects/{key}` | merge-patch or JSON patch; 200 with the new value and `ETag` |
//! | DELETE | `/v1/objects/{key}` | delete; 204 |
//! | PUT, PATCH, DELETE | `/v1/objects/{key}` + `Fencing-Token` | fenced by a lease's token: 409 `fenced` when older than the key's ([`fenced`]) |
//! | POST, PUT, DELETE | `/v1/leases/{name}` | acquire, renew, release ([`routes::leases`]) |
//! | POST, PUT, DELETE | `/v1/idempotency/{key}` | claim, complete, abandon ([`routes::idempotency`]) |
//! | POST | `/v1/users` | register ([`routes::accounts`]) |
//! | GET | `/v1/users` | list users (operator) |
//! | DELETE | `/v1/users/{name}` | delete a user (operator) |
//! | POST, DELETE | `/v1/sessions` | login, logout |
//! | GET | `/v1/me` | who the credentials belong to |
//! | PUT | `/v1/me/password` | change one's own password |
//! | POST | `/v1/db` | a SQL batch on the caller's tenant database ([`routes::db`]) |
//! | GET | `/v1/objects?prefix=&after=&limit=` | a page of keys with sizes and ETags ([`routes::listing`]) |
//! | GET | `/v1/leases/{name}`, `/v1/idempotency/{key}` | inspect a lease or an idempotency record ([`routes::inspect`]) |
//! | GET, PUT | `/v1/snapshots/{name}` | read (304 on `If-None-Match`) or publish version n+1 ([`routes::snapshots`]) |
//! | GET | `/v1/snapshots/{name}/versions[/{n}]` | retained versions, one version's body |
//! | POST | `/v1/snapshots/{name}/rollback` | republish a retained version |
//! | POST, DELETE | `/v1/snapshots/{name}/build` | the optional build lease |
//! | GET, PUT | `/v1/db/export`, `/v1/db/import`; GET `/v1/db/info` | a tenant database as a SQLite file ([`routes::db_files`]) |
//! | GET | `/healthz` | liveness |
//! | GET | `/metrics` | Prometheus text format |
//! | GET | `/openapi.json` | the OpenAPI document of these routes |
//!
//! Every `/v1` route takes `Authorization: Bearer <operator key or session
//! token>` ([`auth`]): the operator key ([`ServerConfig::api_key`]; without
//! one the server only listens on a loopback address, see [`bind`]), or a
//! session token from `POST /v1/sessions` ([`sessions`]). A user reaches their
//! own tenant database; objects, snapshots, leases and idempotency keys
//! are operator scope unless [`ServerConfig::user_prefixes`] lets users use
//! `users/<account id>/...` (never their reusable username). Registration is
//! operator-only unless [`ServerConfig::open_registration`]. Errors are JSON
//! ([`error`]). Password hashing has a bounded capacity and failed logins
//! back off ([`ServerConfig::hash_workers`], [`ServerConfig::login_throttle`]);
//! expired records are swept in the background ([`sweeper`]). The threat
//! model and the limits: `docs/SECURITY.md`.
//!
//! With the `lambda` feature, [`lambda::run`] serves the same router as an
//! AWS Lambda function behind API Gateway (HTTP API, payload v2), and its
//! metrics go to CloudWatch as Embedded Metric Format lines ([`emf`]).

#![warn(missing_docs)]

pub mod auth;
pub mod emf;
pub mod error;
pub mod fenced;
pub mod idempotency_key;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod leases;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod precondition;
pub mod routes;
pub mod sessions;
pub mod sweeper;
pub mod telemetry;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ifmatch::DynStore;
use ifmatch::accounts::{Accounts, AccountsConfig, HashParams, ThrottleConfig};
use ifmatch::clock::{DynClock, SharedRng, SystemClock};
use ifmatch::gc::Collector;
use ifmatch::idempotency::Idempotency;
use ifmatch::lease::Leases;
use ifmatch::retry::RetryPolicy;
use ifmatch::tenantdb::{Sandbox, TenantDbs, TenantDbsConfig};
use ifmatch::update::Updater;
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
    /// Whether anyone may register (`POST /v1/users` without credentials);
    /// otherwise only the operator may.
    pub open_registration: bool,
    /// Whether session users may use objects, snapshots, leases and
    /// idempotency keys under `users/<account id>/` (otherwise those are
    /// operator scope only).
    pub user_prefixes: bool,
    /// How long a session token is accepted after login.
    pub session_ttl: Duration,
    /// The argon2id parameters of new password hashes.
    pub hash_params: HashParams,
    /// How many password hashes run at once, each on a dedicated thread
    /// (default: the number of CPUs; never on tokio's blocking pool).
    pub hash_workers: usize,
    /// How many password hashes may wait for a thread (default: eight per
    /// thread); beyond that, logins and registrations get 429 with `Retry-After`.
    pub hash_queue: usize,
    /// The failed-login back-off per username and per client address
    /// (429 with `Retry-After` while it lasts); see [`ThrottleConfig`].
    pub login_throttle: ThrottleConfig,
    /// A header carrying the client's address that a proxy in front of this
    /// server sets (e.g. `x-forwarded-for`; its last address is used), for the
    /// per-address back-off. `None` (the default): the TCP peer's address,
    /// since a client could forge the header.
    pub client_ip_header: Option<http::HeaderName>,
    /// The local cache directory of tenant databases (`None`: `/v1/db` answers 501).
    pub db_cache_dir: Option<PathBuf>,
    /// The limits of a `/v1/db` batch.
    pub sandbox: Sandbox,
    /// The background collection of expired sessions, leases and
    /// idempotency records run by [`serve`] (`None`: off, e.g. on DynamoDB,
    /// whose TTL removes them).
    pub gc: Option<sweeper::GcSchedule>,
    /// How long after its expiry a record is collected (allowance for clock skew).
    pub gc_grace: Duration,
    /// The most page bytes one tenant-database commit may change (see
    /// `TenantDbsConfig::max_commit_bytes`).
    pub db_max_commit_bytes: u64,
    /// The most bytes one tenant database may hold (see `TenantDbsConfig::max_tenant_bytes`).
    pub db_max_bytes: u64,
    /// The clock of sessions, leases, idempotency and accounts.
    pub clock: DynClock,
    /// The randomness of the primitives (claim ids, backoff jitter, commit
    /// writer ids): from the operating system by default, seeded in tests.
    pub rng: SharedRng,
}

/// The default lifetime of a session token: 24 hours.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(24 * 3600);

impl Default for ServerConfig {
    fn default() -> Self {
        let accounts_defaults = AccountsConfig::default();
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
            open_registration: false,
            user_prefixes: false,
            session_ttl: DEFAULT_SESSION_TTL,
            hash_params: HashParams::OWASP,
            hash_workers: accounts_defaults.hash_workers,
            hash_queue: accounts_defaults.hash_queue,
            login_throttle: ThrottleConfig::default(),
            client_ip_header: None,
            db_cache_dir: None,
            sandbox: Sandbox::default(),
            gc: Some(sweeper::GcSchedule::default()),
            gc_grace: ifmatch::gc::DEFAULT_GRACE,
            db_max_commit_bytes: ifmatch::tenantdb::DEFAULT_MAX_COMMIT_BYTES,
            db_max_bytes: ifmatch::tenantdb::DEFAULT_MAX_TENANT_BYTES,
            clock: SystemClock::shared(),
            rng: SharedRng::from_entropy(),
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
            .field("open_registration", &self.open_registration)
            .field("user_prefixes", &self.user_prefixes)
            .field("session_ttl", &self.session_ttl)
            .field("hash_workers", &self.hash_workers)
            .field("hash_queue", &self.hash_queue)
            .field("login_throttle", &self.login_throttle)
            .field("client_ip_header", &self.client_ip_header)
            .field("db_cache_dir", &self.db_cache_dir)
            .field("sandbox", &self.sandbox)
            .field("gc", &self.gc)
            .field("gc_grace", &self.gc_grace)
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
    /// A primitive could not be set up (the tenant database cache, the hash parameters).
    #[error("cannot set up {what}: {message}")]
    Setup {
        /// What.
        what: &'static str,
        /// Why.
        message: String,
    },
}

/// What every handler shares: the store and the configuration.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: DynStore,
    updater: Updater,
    config: ServerConfig,
    key: Option<auth::OperatorKey>,
    leases: Leases,
    idempotency: Idempotency,
    http_idempotency: Idempotency,
    accounts: Accounts,
    sessions: sessions::Sessions,
    collector: Arc<Collector>,
    dbs: Option<TenantDbs>,
}

impl AppState {
    /// The state of a server on `store` with `config`.
    pub fn new(store: DynStore, config: ServerConfig) -> Result<Self, ServerError> {
        let key = match &config.api_key {
            Some(k) if k.is_empty() => return Err(ServerError::EmptyKey),
            Some(k) => Some(auth::OperatorKey::new(k)),
            None => None,
        };
        let clock = config.clock.clone();
        let rng = config.rng.clone();
        let leases = Leases::new(store.clone())
            .with_clock(clock.clone())
            .with_rng(rng.clone())
            .with_holder_name("http");
        let idempotency = Idempotency::new(store.clone())
            .with_clock(clock.clone())
            .with_rng(rng.clone());
        let http_idempotency = idempotency_key::records(
            Idempotency::new(store.clone())
                .with_clock(clock.clone())
                .with_rng(rng.clone()),
            config.request_timeout,
        );
        let accounts = Accounts::new(
            store.clone(),
            AccountsConfig::default()
                .with_hash_params(config.hash_params)
                .with_hash_capacity(config.hash_workers, config.hash_queue)
                .with_throttle(config.login_throttle)
                .with_clock(clock.clone()),
        )
        .map_err(|e| ServerError::Setup {
            what: "accounts",
            message: e.to_string(),
        })?;
        let sessions = sessions::Sessions::new(store.clone(), config.session_ttl, clock.clone());
        let collector = Collector::new(store.clone())
            .with_prefix(sessions::KEY_PREFIX)
            .with_prefix(idempotency_key::RECORD_PREFIX)
            .with_grace(config.gc_grace)
            .with_clock(clock.clone());
        let dbs = match &config.db_cache_dir {
            Some(dir) => Some(
                TenantDbs::open(
                    store.clone(),
                    TenantDbsConfig::new(dir)
                        .with_clock(clock.clone())
                        .with_retry(RetryPolicy::default().with_rng(rng.clone()))
                        .with_max_commit_bytes(config.db_max_commit_bytes)
                        .with_max_tenant_bytes(config.db_max_bytes),
                )
                .map_err(|e| ServerError::Setup {
                    what: "tenant databases",
                    message: e.to_string(),
                })?,
            ),
            None => None,
        };
        Ok(AppState {
            inner: Arc::new(Inner {
                updater: Updater::new(store.clone(), config.retry.clone()),
                store,
                config,
                key,
                leases,
                idempotency,
                http_idempotency,
                accounts,
                sessions,
                collector: Arc::new(collector),
                dbs,
            }),
        })
    }
    /// The leases.
    pub fn leases(&self) -> &Leases {
        &self.inner.leases
    }
    /// The idempotency records.
    pub fn idempotency(&self) -> &Idempotency {
        &self.inner.idempotency
    }
    /// The records behind the `Idempotency-Key` header ([`idempotency_key`]).
    pub fn http_idempotency(&self) -> &Idempotency {
        &self.inner.http_idempotency
    }
    /// The user accounts.
    pub fn accounts(&self) -> &Accounts {
        &self.inner.accounts
    }
    /// The login sessions.
    pub fn sessions(&self) -> &sessions::Sessions {
        &self.inner.sessions
    }
    /// The collector of expired sessions, leases and idempotency records.
    pub fn collector(&self) -> &Arc<Collector> {
        &self.inner.collector
    }
    /// The tenant databases (`None` without a cache directory).
    pub fn tenant_dbs(&self) -> Option<&TenantDbs> {
        self.inner.dbs.as_ref()
    }
    /// The store.
    pub fn store(&self) -> &DynStore {
        &self.inner.store
    }
    /// The update loop with group commit that PATCH runs through.
    pub fn updater(&self) -> &Updater {
        &self.inner.updater
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
/// Meanwhile the background sweeper ([`sweeper`]) collects expired records
/// if [`ServerConfig::gc`] is set.
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
    use tower::ServiceExt;

    let head_timeout = state.config().request_timeout;
    let sweeper = state
        .config()
        .gc
        .map(|schedule| tokio::spawn(sweeper::run(state.collector().clone(), schedule)));
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
        // The peer's address, for the failed-login back-off (auth::ClientIp).
        let peer = stream.peer_addr().ok().map(|a| auth::ClientAddr(a.ip()));
        let service = app.clone().map_request(move |mut req: http::Request<_>| {
            if let Some(peer) = peer {
                req.extensions_mut().insert(peer);
            }
            req
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(head_timeout)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
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

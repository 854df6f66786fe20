//! Errors of the HTTP interface and their JSON rendering.
//!
//! Every error response has the body
//! `{"error": KIND, "message": TEXT, "key": KEY|null, "current_etag": ETAG|null}`
//! and the status of the table below. `current_etag` is the quoted strong ETag
//! of the key's version when the server knows it (on 412 and 409 conflicts).
//!
//! | kind | status | when |
//! |---|---|---|
//! | `precondition_failed` | 412 | `If-Match` / `If-None-Match` did not hold |
//! | `conflict` | 409 | other writers kept winning and the client sent no precondition |
//! | `precondition_required` | 428 | `--require-preconditions` and a PUT/DELETE of an existing key without one |
//! | `not_found` | 404 | the key does not exist, or no route serves the path |
//! | `bad_request` | 400 | a malformed header, key, metadata or patch document |
//! | `unauthorized` | 401 | missing, wrong or expired credentials (operator key or session token) |
//! | `invalid_credentials` | 401 | a login with a wrong username or password |
//! | `forbidden` | 403 | a session user outside their scope, or an operator-only route |
//! | `lease_held` | 409 | another owner holds the lease (with `holder` and `expires_in_ms`) |
//! | `not_owner` | 409 | renew or release by an owner that does not hold the lease |
//! | `fenced` | 409 | a write whose `Fencing-Token` is older than the token already used for the key |
//! | `in_progress` | 409 | an idempotency key claimed by another request, still running |
//! | `not_claim_holder` | 409 | complete or abandon with a claim id that does not hold the key |
//! | `payload_mismatch` | 422 | an idempotency key reused for a different payload |
//! | `user_exists` | 409 | registration of a taken username |
//! | `user_not_found` | 404 | an operator's `DELETE /v1/users/{name}` of no such user |
//! | `wrong_password` | 403 | a password change with a wrong old password |
//! | `too_many_requests` | 429 | password hashing at capacity, or a failed-login back-off; with `Retry-After` |
//! | `sql_error` | 400 | SQLite refused a statement (syntax, constraint, unknown table) |
//! | `sql_denied` | 403 | a statement the SQL sandbox refuses (ATTACH, VACUUM, file pragmas, load_extension) |
//! | `limit_exceeded` | 422 | a SQL batch over its time, row, size or statement limit, or a tenant database commit over the commit size or database size limit (named in the message) |
//! | `payload_too_large` | 413 | the body is larger than the limit |
//! | `unsupported_media_type` | 415 | a PATCH that is neither merge-patch nor json-patch |
//! | `patch_failed` | 422 | a patch that cannot be applied (a failed `test`, a missing path) |
//! | `not_json` | 409 | a PATCH of a value that is not a JSON document |
//! | `timeout` | 504 | the request took longer than the request timeout (a write may or may not have landed) |
//! | `outcome_unknown` | 504 | a write's outcome cannot be known: it may or may not have landed. Retry with the same `Idempotency-Key` to settle it (see [`crate::idempotency_key`]), or re-read |
//! | `idempotency_in_progress` | 409 | a request with the same `Idempotency-Key` is still running (`Retry-After`) |
//! | `idempotency_key_reused` | 422 | an `Idempotency-Key` sent again with a different request |
//! | `unavailable` | 503 | the store is unreachable or refused for a transient reason; nothing was written (retry later) |
//! | `unsupported` | 501 | the store cannot do this |
//! | `internal` | 500 | anything else |

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use ifmatch::update::UpdateError;
use ifmatch::{Error, Version};
use serde::Serialize;

use crate::patch::PatchError;
use crate::precondition::{PreconditionError, etag_for};

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable kind (see the module docs).
    pub error: &'static str,
    /// A human-readable explanation.
    pub message: String,
    /// The key concerned, if any (an object key, lease name, idempotency key or tenant).
    #[schema(required = true)]
    pub key: Option<String>,
    /// The key's current strong ETag, when known (on conflicts).
    #[schema(required = true)]
    pub current_etag: Option<String>,
    /// `lease_held` / `not_owner`: the current holder's fingerprint (not its owner id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// `lease_held`: milliseconds until the holder's lease expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<u64>,
}

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A precondition did not hold (412).
    #[error("precondition failed on key '{key}': {}", describe(.current))]
    PreconditionFailed {
        /// The key.
        key: String,
        /// Its current version (`None`: absent or unknown).
        current: Option<Version>,
    },
    /// A write lost to other writers without a precondition from the client (409).
    #[error("{message}")]
    Conflict {
        /// The key.
        key: String,
        /// Its current version, if known.
        current: Option<Version>,
        /// What happened.
        message: String,
    },
    /// The key exists and the request carried no precondition (428).
    #[error(
        "key '{key}' exists: this server requires If-Match (or If-None-Match: *) on writes and deletes"
    )]
    PreconditionRequired {
        /// The key.
        key: String,
        /// Its current version, if known.
        current: Option<Version>,
    },
    /// The key does not exist (404).
    #[error("key '{key}' not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// No route serves this path (404).
    #[error("no route for {0}")]
    NoRoute(String),
    /// A malformed request (400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong credentials (401).
    #[error(
        "missing, wrong or expired credentials: send 'Authorization: Bearer <operator key or session token>'"
    )]
    Unauthorized,
    /// Authenticated, but not allowed to do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// A lease is held by another owner (409).
    #[error("lease '{name}' is held by {holder} (token {token}); it expires in {expires_in_ms} ms")]
    LeaseHeld {
        /// The lease name.
        name: String,
        /// The holder's fingerprint.
        holder: String,
        /// The holder's fencing token.
        token: u64,
        /// Milliseconds until it expires.
        expires_in_ms: u64,
    },
    /// A fenced write whose token is older than the key's (409 `fenced`).
    #[error(transparent)]
    Fenced(ifmatch::fence::Fenced),
    /// Any other refusal, with its own status and kind.
    #[error("{message}")]
    Refused {
        /// The status.
        status: StatusCode,
        /// The machine-readable kind.
        kind: &'static str,
        /// What happened.
        message: String,
        /// The key concerned, if any.
        key: Option<String>,
    },
    /// The body exceeds the limit (413).
    #[error("request body larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A PATCH content type this server does not apply (415).
    #[error(
        "unsupported patch type {0:?}: use application/merge-patch+json or application/json-patch+json"
    )]
    UnsupportedMediaType(String),
    /// A patch that cannot be applied (422) or a target that is not JSON (409).
    #[error("{source}")]
    Patch {
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: PatchError,
    },
    /// Refused for now: retry after the given time (429, with `Retry-After`).
    #[error("{message}")]
    TooManyRequests {
        /// What is at its limit.
        message: String,
        /// When a retry is sensible.
        retry_after: std::time::Duration,
    },
    /// The request timed out (504).
    #[error("request timed out after {0:?}; a write may or may not have landed: re-read")]
    Timeout(std::time::Duration),
    /// The store failed.
    #[error(transparent)]
    Store(Error),
    /// The update loop failed for a reason other than a conflict.
    #[error("{0}")]
    Update(String, ifmatch::ErrorKind, Option<String>),
}

fn describe(current: &Option<Version>) -> String {
    match current {
        Some(v) => format!("its current ETag is {}", etag_for(v)),
        None => "it does not exist".to_string(),
    }
}

impl From<PreconditionError> for ApiError {
    fn from(e: PreconditionError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl ApiError {
    /// Maps a store error; `precondition` tells whether the client sent one
    /// (a conflict is then 412, else 409).
    pub fn from_store(e: Error, precondition: bool) -> Self {
        match e {
            Error::Conflict { key, actual, .. } => {
                if precondition {
                    ApiError::PreconditionFailed {
                        key,
                        current: actual,
                    }
                } else {
                    ApiError::Conflict {
                        message: format!(
                            "conflict on key '{key}': another writer changed it; re-read and retry"
                        ),
                        key,
                        current: actual,
                    }
                }
            }
            Error::NotFound { key } => ApiError::NotFound { key },
            other => ApiError::Store(other),
        }
    }

    /// Maps an update-loop error (see [`ApiError::from_store`] for `precondition`).
    pub fn from_update(e: UpdateError, precondition: bool) -> Self {
        match e {
            UpdateError::Conflict { key, last, .. } => {
                let current = match last {
                    Error::Conflict { actual, .. } => actual,
                    _ => None,
                };
                let message = format!(
                    "conflict on key '{key}': other writers kept winning until the retry budget ran out"
                );
                if precondition {
                    ApiError::PreconditionFailed { key, current }
                } else {
                    ApiError::Conflict {
                        key,
                        current,
                        message,
                    }
                }
            }
            UpdateError::Aborted { key, source } => match source.downcast::<Abort>() {
                Ok(abort) => match *abort {
                    Abort::Precondition(current) => ApiError::PreconditionFailed { key, current },
                    Abort::NotFound => ApiError::NotFound { key },
                    Abort::Patch(source) => ApiError::Patch { key, source },
                },
                Err(other) => ApiError::Update(
                    format!("update of key '{key}' aborted: {other}"),
                    ifmatch::ErrorKind::Other,
                    Some(key),
                ),
            },
            UpdateError::Store(e) => ApiError::from_store(e, precondition),
            e @ UpdateError::Ambiguous { .. } => {
                let kind = e.kind();
                let key = match &e {
                    UpdateError::Ambiguous { key } => Some(key.clone()),
                    _ => None,
                };
                ApiError::Update(e.to_string(), kind, key)
            }
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, Option<&str>, Option<&Version>) {
        match self {
            ApiError::PreconditionFailed { key, current } => (
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                Some(key),
                current.as_ref(),
            ),
            ApiError::Conflict { key, current, .. } => (
                StatusCode::CONFLICT,
                "conflict",
                Some(key),
                current.as_ref(),
            ),
            ApiError::PreconditionRequired { key, current } => (
                StatusCode::PRECONDITION_REQUIRED,
                "precondition_required",
                Some(key),
                current.as_ref(),
            ),
            ApiError::NotFound { key } => (StatusCode::NOT_FOUND, "not_found", Some(key), None),
            ApiError::NoRoute(_) => (StatusCode::NOT_FOUND, "not_found", None, None),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", None, None),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", None, None),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", None, None),
            ApiError::LeaseHeld { name, .. } => {
                (StatusCode::CONFLICT, "lease_held", Some(name), None)
            }
            ApiError::Fenced(f) => (
                StatusCode::CONFLICT,
                "fenced",
                Some(&f.key),
                Some(&f.current),
            ),
            ApiError::Refused {
                status, kind, key, ..
            } => (*status, *kind, key.as_deref(), None),
            ApiError::PayloadTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                None,
                None,
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                None,
                None,
            ),
            ApiError::Patch { key, source } => match source {
                PatchError::NotJson(_) => (StatusCode::CONFLICT, "not_json", Some(key), None),
                PatchError::BadDocument(_) => {
                    (StatusCode::BAD_REQUEST, "bad_request", Some(key), None)
                }
                PatchError::Failed(_) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "patch_failed",
                    Some(key),
                    None,
                ),
            },
            ApiError::TooManyRequests { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                None,
                None,
            ),
            ApiError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout", None, None),
            ApiError::Store(e) => {
                let key = match e {
                    Error::InvalidKey { key, .. }
                    | Error::TooLarge { key, .. }
                    | Error::Ambiguous { key, .. } => Some(key.as_str()),
                    _ => None,
                };
                let (status, kind) = status_of(e.kind());
                (status, kind, key, None)
            }
            ApiError::Update(_, kind, key) => {
                let (status, k) = status_of(*kind);
                (status, k, key.as_deref(), None)
            }
        }
    }
}

impl ApiError {
    /// A refusal with its own status and kind.
    pub fn refused(
        status: StatusCode,
        kind: &'static str,
        message: impl Into<String>,
        key: Option<&str>,
    ) -> Self {
        ApiError::Refused {
            status,
            kind,
            message: message.into(),
            key: key.map(str::to_string),
        }
    }

    /// A library error by its kind: status, kind string and message.
    pub fn from_kind(kind: ifmatch::ErrorKind, message: String, key: Option<&str>) -> Self {
        let (status, k) = status_of(kind);
        ApiError::refused(status, k, message, key)
    }
}

/// The status and kind string of a library error kind.
pub(crate) fn status_of(kind: ifmatch::ErrorKind) -> (StatusCode, &'static str) {
    use ifmatch::ErrorKind as K;
    match kind {
        K::Conflict => (StatusCode::CONFLICT, "conflict"),
        K::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        K::Invalid => (StatusCode::BAD_REQUEST, "bad_request"),
        K::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        K::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        K::Ambiguous => (StatusCode::GATEWAY_TIMEOUT, "outcome_unknown"),
        K::Unsupported => (StatusCode::NOT_IMPLEMENTED, "unsupported"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// Why a closure given to the update loop stopped (carried through its boxed error).
#[derive(Debug, thiserror::Error)]
pub enum Abort {
    /// The preconditions do not hold at this version.
    #[error("precondition failed")]
    Precondition(Option<Version>),
    /// The key is absent.
    #[error("not found")]
    NotFound,
    /// The patch does not apply.
    #[error(transparent)]
    Patch(#[from] PatchError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, key, current) = self.parts();
        let (holder, expires_in_ms) = match &self {
            ApiError::LeaseHeld {
                holder,
                expires_in_ms,
                ..
            } => (Some(holder.clone()), Some(*expires_in_ms)),
            _ => (None, None),
        };
        let body = ErrorBody {
            error: kind,
            message: self.to_string(),
            key: key.map(str::to_string),
            current_etag: current.map(etag_for),
            holder,
            expires_in_ms,
        };
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = kind, message = %body.message, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = kind, message = %body.message, "request refused");
        }
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ifmatch\""),
            );
        }
        if let ApiError::TooManyRequests { retry_after, .. } = &self {
            // Whole seconds, rounded up, at least 1 (RFC 9110 §10.2.3).
            let secs = retry_after.as_millis().div_ceil(1000).max(1);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs as u64));
        }
        resp
    }
}

impl From<ifmatch::lease::LeaseError> for ApiError {
    fn from(e: ifmatch::lease::LeaseError) -> Self {
        use ifmatch::lease::LeaseError as L;
        match e {
            // The library's messages name owner ids, which are the proof of
            // ownership here: answer with fingerprints instead.
            L::Held {
                name,
                holder,
                token,
                expires_in,
                ..
            } => ApiError::LeaseHeld {
                name,
                holder: crate::leases::fingerprint(&holder),
                token,
                expires_in_ms: expires_in.as_millis() as u64,
            },
            L::NotOwner { name, holder, .. } => {
                let now = match holder {
                    Some(h) => format!("it is held by {}", crate::leases::fingerprint(&h)),
                    None => "it is not held (released or expired)".to_string(),
                };
                ApiError::refused(
                    StatusCode::CONFLICT,
                    "not_owner",
                    format!("lease '{name}' is not held by this owner: {now}"),
                    Some(&name),
                )
            }
            L::Invalid(m) => ApiError::BadRequest(m),
            other => {
                let kind = other.kind();
                ApiError::from_kind(kind, other.to_string(), None)
            }
        }
    }
}

impl From<ifmatch::idempotency::IdempotencyError<std::convert::Infallible>> for ApiError {
    fn from(e: ifmatch::idempotency::IdempotencyError<std::convert::Infallible>) -> Self {
        use ifmatch::idempotency::IdempotencyError as I;
        let message = e.to_string();
        match e {
            I::InProgress { key, .. } => {
                ApiError::refused(StatusCode::CONFLICT, "in_progress", message, Some(&key))
            }
            I::PayloadMismatch { key, .. } => ApiError::refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                "payload_mismatch",
                message,
                Some(&key),
            ),
            I::NotClaimed { key, .. } => ApiError::refused(
                StatusCode::CONFLICT,
                "not_claim_holder",
                message,
                Some(&key),
            ),
            I::NotSaved { key, .. } => ApiError::refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                message,
                Some(&key),
            ),
            I::Invalid(m) => ApiError::BadRequest(m),
            other => ApiError::from_kind(other.kind(), message, None),
        }
    }
}

impl From<ifmatch::accounts::AccountsError> for ApiError {
    fn from(e: ifmatch::accounts::AccountsError) -> Self {
        use ifmatch::accounts::AccountsError as A;
        let message = e.to_string();
        match e {
            A::InvalidCredentials => ApiError::refused(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "wrong username or password",
                None,
            ),
            A::UserAlreadyExists { username } => ApiError::refused(
                StatusCode::CONFLICT,
                "user_exists",
                message,
                Some(&username),
            ),
            A::UserNotFound { username } => ApiError::refused(
                StatusCode::NOT_FOUND,
                "user_not_found",
                message,
                Some(&username),
            ),
            A::AccountChanged { username } => {
                ApiError::refused(StatusCode::CONFLICT, "conflict", message, Some(&username))
            }
            A::Busy { retry_after, .. } | A::Throttled { retry_after, .. } => {
                ApiError::TooManyRequests {
                    message,
                    retry_after,
                }
            }
            other => ApiError::from_kind(other.kind(), message, None),
        }
    }
}

impl From<ifmatch::tenantdb::TenantDbError> for ApiError {
    fn from(e: ifmatch::tenantdb::TenantDbError) -> Self {
        use ifmatch::tenantdb::TenantDbError as T;
        let message = e.to_string();
        match e {
            T::Sql { .. } | T::InvalidInput(_) => {
                ApiError::refused(StatusCode::BAD_REQUEST, "sql_error", message, None)
            }
            T::Denied { .. } => {
                ApiError::refused(StatusCode::FORBIDDEN, "sql_denied", message, None)
            }
            T::LimitExceeded { .. } => ApiError::refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                "limit_exceeded",
                message,
                None,
            ),
            T::Conflict { tenant, .. } | T::Exists { tenant } => {
                ApiError::refused(StatusCode::CONFLICT, "conflict", message, Some(&tenant))
            }
            T::NotFound { tenant } => {
                ApiError::refused(StatusCode::NOT_FOUND, "not_found", message, Some(&tenant))
            }
            other => ApiError::from_kind(other.kind(), message, None),
        }
    }
}

/// The ETag of snapshot version `n`: `"n"`.
pub fn snapshot_version(n: u64) -> Version {
    Version::new(n.to_string())
}

impl From<ifmatch::snapshot::SnapshotError> for ApiError {
    fn from(e: ifmatch::snapshot::SnapshotError) -> Self {
        use ifmatch::snapshot::SnapshotError as S;
        let message = e.to_string();
        match e {
            S::NotFound { name } | S::VersionNotRetained { name, .. } => {
                ApiError::refused(StatusCode::NOT_FOUND, "not_found", message, Some(&name))
            }
            S::InvalidName { .. } => ApiError::BadRequest(message),
            S::Conflict { name, .. } => ApiError::Conflict {
                key: name,
                current: None,
                message,
            },
            S::Ambiguous { name, .. } => {
                ApiError::from_kind(ifmatch::ErrorKind::Ambiguous, message, Some(&name))
            }
            S::Store(e) => ApiError::from_store(e, false),
            S::Shared(e) => ApiError::from_kind(e.kind(), message, None),
            other => ApiError::from_kind(other.kind(), message, None),
        }
    }
}

impl From<ifmatch::artifact::ArtifactError> for ApiError {
    fn from(e: ifmatch::artifact::ArtifactError) -> Self {
        use ifmatch::artifact::ArtifactError as A;
        match e {
            A::Precondition { name, current } => ApiError::PreconditionFailed {
                key: name,
                current: current.map(snapshot_version),
            },
            A::Snapshot(e) => e.into(),
            A::Lease(e) => e.into(),
            other => ApiError::from_kind(other.kind(), other.to_string(), None),
        }
    }
}

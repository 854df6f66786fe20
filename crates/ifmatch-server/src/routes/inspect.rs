//! Read-only inspection of the coordination records: `GET /v1/leases/{name}`
//! ([`ifmatch::lease::Leases::inspect`]) and `GET /v1/idempotency/{key}`
//! ([`ifmatch::idempotency::Idempotency::inspect`]). Neither changes anything.
//!
//! - A lease: its holder's **fingerprint** (never the owner id, which is the
//!   proof of ownership), fencing token, whether it was released, when it
//!   was acquired and when it expires (ms since the Unix epoch, by the
//!   writer's clock; `expires_in_ms` is 0 once past). **404** if it was never taken.
//! - An idempotency key: its state (`in_progress` or `completed`), the hex
//!   SHA-256 of the payload it was claimed for, its times and, when
//!   completed, the stored result. **404** if there is no record.
//!
//! The same scope rules as the rest of each group apply.

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use http::StatusCode;
use ifmatch::idempotency::RecordState;
use serde::Serialize;
use serde_json::Value;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::routes::extract::{IdempotencyKeyParam, LeaseNameParam, ObjectKey};
use crate::routes::leases::ms;

/// The routes of this group (GET next to the writes of the same paths).
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v1/leases/{*name}", get(inspect_lease))
        .route("/v1/idempotency/{*key}", get(inspect_key))
}

/// What a lease record says.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LeaseInfoBody {
    /// The lease name.
    pub name: String,
    /// The fingerprint of the current (or last) holder's owner id.
    pub holder: String,
    /// The current (or last) fencing token.
    pub token: u64,
    /// Whether the last holder released it.
    pub released: bool,
    /// When the holder acquired it, in ms since the Unix epoch.
    pub acquired_at_ms: u64,
    /// When it expires (or was released), in ms since the Unix epoch.
    pub expires_at_ms: u64,
    /// Milliseconds until it expires by this server's clock (0 once past or released).
    pub expires_in_ms: u64,
}

/// What an idempotency record says.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordBody {
    /// The idempotency key.
    pub key: String,
    /// `in_progress` (claimed, running) or `completed`.
    #[schema(value_type = String, pattern = "^(in_progress|completed)$")]
    pub state: RecordState,
    /// The hex SHA-256 of the payload the key was claimed for.
    pub payload_hash: String,
    /// When the (current) claim was made, in ms since the Unix epoch.
    pub claimed_at_ms: u64,
    /// When the record was last written, in ms since the Unix epoch.
    pub updated_at_ms: u64,
    /// In progress: when the claim goes stale; completed: when the result
    /// expires (ms since the Unix epoch).
    pub expires_at_ms: u64,
    /// The stored result (when completed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

fn not_found(what: &str, key: &str) -> ApiError {
    ApiError::refused(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no {what} '{key}'"),
        Some(key),
    )
}

/// Shows a lease: holder fingerprint, token and expiry.
#[utoipa::path(
    get,
    path = "/v1/leases/{name}",
    tag = "leases",
    params(("name" = inline(LeaseNameParam), Path, description = "The lease name (may contain '/')")),
    responses(
        (status = 200, description = "The lease record (the holder as a fingerprint)", body = LeaseInfoBody),
        (status = 403, description = "Outside the caller's scope (`forbidden`)", body = ErrorBody),
        (status = 404, description = "Never taken (`not_found`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn inspect_lease(
    State(app): State<AppState>,
    caller: Caller,
    ObjectKey(name): ObjectKey,
) -> Result<Json<LeaseInfoBody>, ApiError> {
    caller.check_scope(&app, "lease", &name)?;
    let info = app
        .leases()
        .inspect(&name)
        .await?
        .ok_or_else(|| not_found("lease", &name))?;
    let now = app.config().clock.now();
    let expires_in_ms = if info.released {
        0
    } else {
        info.expires_at
            .duration_since(now)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    };
    Ok(Json(LeaseInfoBody {
        holder: crate::leases::fingerprint(&info.owner),
        token: info.token,
        released: info.released,
        acquired_at_ms: ms(info.acquired_at),
        expires_at_ms: ms(info.expires_at),
        expires_in_ms,
        name: info.name,
    }))
}

/// Shows an idempotency record: state, payload hash and result.
#[utoipa::path(
    get,
    path = "/v1/idempotency/{key}",
    tag = "idempotency",
    params(("key" = inline(IdempotencyKeyParam), Path, description = "The idempotency key (may contain '/')")),
    responses(
        (status = 200, description = "The record", body = RecordBody),
        (status = 403, description = "Outside the caller's scope (`forbidden`)", body = ErrorBody),
        (status = 404, description = "No record (`not_found`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn inspect_key(
    State(app): State<AppState>,
    caller: Caller,
    ObjectKey(key): ObjectKey,
) -> Result<Json<RecordBody>, ApiError> {
    caller.check_scope(&app, "idempotency key", &key)?;
    let info = app
        .idempotency()
        .inspect(&key)
        .await?
        .ok_or_else(|| not_found("idempotency record", &key))?;
    Ok(Json(RecordBody {
        key: info.key,
        state: info.state,
        payload_hash: info.payload_hash,
        claimed_at_ms: ms(info.claimed_at),
        updated_at_ms: ms(info.updated_at),
        expires_at_ms: ms(info.expires_at),
        result: info.result,
    }))
}

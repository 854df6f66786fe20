//! `/v1/idempotency/{key}`: claim (POST), complete (PUT) and abandon (DELETE)
//! an idempotency key, over [`ifmatch::idempotency::Idempotency`]'s
//! `claim` / `complete` / `abandon`.
//!
//! - `POST` with `{"payload": ANY}` (optional; its hash is stored with the
//!   claim): **201** `{"state": "claimed", "claim_id", ...}` — do the work,
//!   then complete or abandon; **200** `{"state": "completed", "result"}` —
//!   an earlier request did it; **409** `in_progress` — another request holds
//!   a fresh claim; **422** `payload_mismatch` — the key was used for a
//!   different payload.
//! - `PUT` with `Idempotency-Claim: <claim_id>` and `{"result": ANY}`:
//!   **200**, the result is stored for later claims.
//! - `DELETE` with `Idempotency-Claim: <claim_id>`: **204**, the next claim runs the work.
//!
//! A wrong claim id (or one whose claim went stale and was taken over) is
//! **409** `not_claim_holder`. Claims go stale after 10 minutes; results are
//! kept for an hour.

use std::time::UNIX_EPOCH;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderMap, StatusCode};
use ifmatch::idempotency::Claim;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::routes::extract::{IdempotencyKeyParam, JsonBody, ObjectKey, required_header};

/// The header that carries the claim id on complete and abandon.
pub const CLAIM_HEADER: &str = "idempotency-claim";

/// The routes of this group.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route(
        "/v1/idempotency/{*key}",
        post(claim_key).put(complete_key).delete(abandon_key),
    )
}

/// The body of a claim.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The request the key stands for (any JSON; `null` if absent).
    #[serde(default)]
    pub payload: Value,
}

/// The body of a complete.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// The result to give later claims (any JSON; `null` if absent).
    #[serde(default)]
    pub result: Value,
}

/// The state of an idempotency key, as claim and complete report it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IdempotencyBody {
    /// The key.
    pub key: String,
    /// `claimed` (by this request) or `completed`.
    pub state: &'static str,
    /// The claim id (when `claimed`): send it back as `Idempotency-Claim`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_id: Option<String>,
    /// When the claim goes stale (when `claimed`), in ms since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// The stored result (when `completed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// Claims a key.
#[utoipa::path(
    post,
    path = "/v1/idempotency/{key}",
    tag = "idempotency",
    params(("key" = inline(IdempotencyKeyParam), Path, description = "The idempotency key (may contain '/')")),
    request_body(content = ClaimRequest, description = "The payload (optional; an empty body is a `null` payload)", content_type = "application/json"),
    responses(
        (status = 201, description = "Claimed by this request: do the work, then complete or abandon", body = IdempotencyBody),
        (status = 200, description = "Completed earlier: here is the result", body = IdempotencyBody),
        (status = 400, description = "An invalid key or JSON (`bad_request`)", body = ErrorBody),
        (status = 403, description = "Outside the caller's scope (`forbidden`)", body = ErrorBody),
        (status = 409, description = "In progress elsewhere (`in_progress`)", body = ErrorBody),
        (status = 422, description = "The key was used for a different payload (`payload_mismatch`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn claim_key(
    State(app): State<AppState>,
    caller: Caller,
    ObjectKey(key): ObjectKey,
    JsonBody(req): JsonBody<ClaimRequest>,
) -> Result<Response, ApiError> {
    caller.check_scope(&app, "idempotency key", &key)?;
    Ok(match app.idempotency().claim(&key, &req.payload).await? {
        Claim::Claimed(ticket) => (
            StatusCode::CREATED,
            Json(IdempotencyBody {
                key,
                state: "claimed",
                claim_id: Some(ticket.claim_id().to_string()),
                expires_at_ms: ticket
                    .expires_at()
                    .duration_since(UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_millis() as u64),
                result: None,
            }),
        )
            .into_response(),
        Claim::Completed(result) => Json(IdempotencyBody {
            key,
            state: "completed",
            claim_id: None,
            expires_at_ms: None,
            result: Some(result),
        })
        .into_response(),
    })
}

/// Stores the result of a claim.
#[utoipa::path(
    put,
    path = "/v1/idempotency/{key}",
    tag = "idempotency",
    params(
        ("key" = inline(IdempotencyKeyParam), Path, description = "The idempotency key"),
        ("Idempotency-Claim" = String, Header, description = "The claim id returned by the claim", pattern = r"^[\t\x20-\x7e]*$"),
    ),
    request_body(content = CompleteRequest, description = "The result (optional; an empty body is a `null` result)", content_type = "application/json"),
    responses(
        (status = 200, description = "Stored", body = IdempotencyBody),
        (status = 400, description = "No `Idempotency-Claim`, or an invalid key or JSON (`bad_request`)", body = ErrorBody),
        (status = 403, description = "Outside the caller's scope (`forbidden`)", body = ErrorBody),
        (status = 409, description = "Not held by this claim (`not_claim_holder`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn complete_key(
    State(app): State<AppState>,
    caller: Caller,
    ObjectKey(key): ObjectKey,
    headers: HeaderMap,
    JsonBody(req): JsonBody<CompleteRequest>,
) -> Result<Json<IdempotencyBody>, ApiError> {
    caller.check_scope(&app, "idempotency key", &key)?;
    let claim_id = required_header(&headers, CLAIM_HEADER)?;
    app.idempotency()
        .complete(&key, claim_id, &req.result)
        .await?;
    Ok(Json(IdempotencyBody {
        key,
        state: "completed",
        claim_id: None,
        expires_at_ms: None,
        // Completing twice keeps the first result: re-claim to read it.
        result: None,
    }))
}

/// Gives up a claim, so the next claim runs the work.
#[utoipa::path(
    delete,
    path = "/v1/idempotency/{key}",
    tag = "idempotency",
    params(
        ("key" = inline(IdempotencyKeyParam), Path, description = "The idempotency key"),
        ("Idempotency-Claim" = String, Header, description = "The claim id returned by the claim", pattern = r"^[\t\x20-\x7e]*$"),
    ),
    responses(
        (status = 204, description = "Abandoned (or there was no record)"),
        (status = 400, description = "No `Idempotency-Claim`, or an invalid key (`bad_request`)", body = ErrorBody),
        (status = 403, description = "Outside the caller's scope (`forbidden`)", body = ErrorBody),
        (status = 409, description = "Not held by this claim, or already completed (`not_claim_holder`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn abandon_key(
    State(app): State<AppState>,
    caller: Caller,
    ObjectKey(key): ObjectKey,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    caller.check_scope(&app, "idempotency key", &key)?;
    let claim_id = required_header(&headers, CLAIM_HEADER)?;
    app.idempotency().abandon(&key, claim_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

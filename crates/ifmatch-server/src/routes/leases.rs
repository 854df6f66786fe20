//! `/v1/leases/{name}`: acquire (POST), renew (PUT) and release (DELETE) a lease.
//!
//! - `POST` with an optional JSON body `{"ttl": SECONDS, "wait": SECONDS}`
//!   (defaults 30 and 0; `wait` must be shorter than the request timeout):
//!   **201** with the lease (`owner`, `token`, `expires_at_ms`, ...), or
//!   **409** `lease_held` naming the `holder` (a fingerprint) and `expires_in_ms`.
//! - `PUT` with the `Lease-Owner: <owner>` header and an optional body
//!   `{"ttl": SECONDS}` (default 30): **200** with the renewed lease.
//! - `DELETE` with `Lease-Owner: <owner>`: **204** (also when already released).
//!
//! The owner id returned at acquire is the proof of ownership (see
//! [`crate::leases`]); renew or release by anyone else is **409** `not_owner`.
//! Fencing tokens strictly increase per name: pass the token along with the
//! writes the lease protects.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use http::{HeaderMap, StatusCode};
use ifmatch::lease::{Lease, Leases};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::routes::extract::{JsonBody, LeaseNameParam, ObjectKey, required_header};

/// The header that carries the owner id on renew and release.
pub const OWNER_HEADER: &str = "lease-owner";

/// The TTL when the request names none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// The longest TTL accepted: a day.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// The routes of this group.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route(
        "/v1/leases/{*name}",
        post(acquire_lease).put(renew_lease).delete(release_lease),
    )
}

/// The body of an acquire.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest {
    /// How long the lease lasts unless renewed, in seconds (default 30; from 0.001 to a day).
    #[schema(minimum = 0.001, maximum = 86400, example = 30)]
    pub ttl: Option<f64>,
    /// How long to wait for the current holder to release it, in seconds
    /// (default 0); shorter than the server's request timeout (30 s unless
    /// `ifmatch serve --request-timeout` says otherwise: `/openapi.json`
    /// gives this server's).
    #[schema(minimum = 0, exclusive_maximum = 30, example = 0)]
    pub wait: Option<f64>,
}

/// The body of a renew.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// The new TTL from now, in seconds (default 30; from 0.001 to a day).
    #[schema(minimum = 0.001, maximum = 86400, example = 30)]
    pub ttl: Option<f64>,
}

/// A held lease.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LeaseBody {
    /// The lease name.
    pub name: String,
    /// The owner id: the proof of ownership to send back as `Lease-Owner` (keep it secret).
    pub owner: String,
    /// The public fingerprint of the owner, as other callers see it in a 409.
    pub holder: String,
    /// The fencing token: greater than every token handed out before for this name.
    pub token: u64,
    /// The TTL of each renewal, in milliseconds.
    pub ttl_ms: u64,
    /// When the lease expires unless renewed, in ms since the Unix epoch (server clock).
    pub expires_at_ms: u64,
    /// Milliseconds until it expires.
    pub expires_in_ms: u64,
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The JSON body of a held lease at `now`.
pub(crate) fn body(lease: &Lease, now: SystemTime) -> LeaseBody {
    LeaseBody {
        name: lease.name().to_string(),
        owner: lease.owner().to_string(),
        holder: crate::leases::fingerprint(lease.owner()),
        token: lease.token(),
        ttl_ms: lease.ttl().as_millis() as u64,
        expires_at_ms: ms(lease.expires_at()),
        expires_in_ms: lease.expires_in(now).as_millis() as u64,
    }
}

/// Seconds from a request field, within `(0, max]` (or `[0, max)` for a wait).
fn seconds(
    v: Option<f64>,
    default: Duration,
    max: Duration,
    what: &str,
) -> Result<Duration, ApiError> {
    let Some(s) = v else {
        return Ok(default);
    };
    let d = Duration::try_from_secs_f64(s).map_err(|_| {
        ApiError::BadRequest(format!("{what} must be a non-negative number of seconds"))
    })?;
    if d > max {
        return Err(ApiError::BadRequest(format!(
            "{what} must be at most {} seconds",
            max.as_secs_f64()
        )));
    }
    Ok(d)
}

fn ttl(v: Option<f64>) -> Result<Duration, ApiError> {
    let ttl = seconds(v, DEFAULT_TTL, MAX_TTL, "ttl")?;
    if ttl < Duration::from_millis(1) {
        return Err(ApiError::BadRequest(
            "ttl must be at least 0.001 seconds".into(),
        ));
    }
    Ok(ttl)
}

/// The TTL and wait of an acquire (400 when out of range: the wait must be
/// shorter than the request timeout).
pub(crate) fn acquire_terms(
    app: &AppState,
    req: &AcquireRequest,
) -> Result<(Duration, Duration), ApiError> {
    let ttl = ttl(req.ttl)?;
    let limit = app.config().request_timeout;
    let wait = seconds(req.wait, Duration::ZERO, limit, "wait")?;
    if wait >= limit {
        return Err(ApiError::BadRequest(format!(
            "wait must be shorter than the request timeout ({} seconds)",
            limit.as_secs_f64()
        )));
    }
    Ok((ttl, wait))
}

/// Acquires a lease.
#[utoipa::path(
    post,
    path = "/v1/leases/{name}",
    tag = "leases",
    params(("name" = inline(LeaseNameParam), Path, description = "The lease name (may contain '/')")),
    request_body(content = AcquireRequest, description = "TTL and wait, in seconds (both optional; an empty body takes the defaults)", content_type = "application/json"),
    responses(
        (status = 201, description = "Acquired", body = LeaseBody),
        (status = 400, description = "Invalid TTL, wait, name or JSON (`bad_request`)", body = ErrorBody),
        (status = 403, description = "Outside the caller's scope (`forbidden`)", body = ErrorBody),
        (status = 409, description = "Held by another owner (`lease_held`, with `holder` and `expires_in_ms`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn acquire_lease(
    State(app): State<AppState>,
    caller: Caller,
    ObjectKey(name): ObjectKey,
    JsonBody(req): JsonBody<AcquireRequest>,
) -> Result<(StatusCode, Json<LeaseBody>), ApiError> {
    caller.check_scope(&app, "lease", &name)?;
    let (ttl, wait) = acquire_terms(&app, &req)?;
    let lease = app.leases().acquire(&name, ttl, wait).await?;
    Ok((
        StatusCode::CREATED,
        Json(body(&lease, app.config().clock.now())),
    ))
}

/// Renews a lease held by the owner in `Lease-Owner`.
#[utoipa::path(
    put,
    path = "/v1/leases/{name}",
    tag = "leases",
    params(
        ("name" = inline(LeaseNameParam), Path, description = "The lease name"),
        ("Lease-Owner" = String, Header, description = "The owner id returned at acquire", pattern = r"^[\t\x20-\x7e]*$"),
    ),
    request_body(content = RenewRequest, description = "The new TTL in seconds (optional; an empty body takes the default)", content_type = "application/json"),
    responses(
        (status = 200, description = "Renewed", body = LeaseBody),
        (status = 400, description = "No `Lease-Owner`, or an invalid TTL, name or JSON (`bad_request`)", body = ErrorBody),
        (status = 403, description = "Outside the caller's scope (`forbidden`)", body = ErrorBody),
        (status = 409, description = "Not held by this owner (`not_owner`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn renew_lease(
    State(app): State<AppState>,
    caller: Caller,
    ObjectKey(name): ObjectKey,
    headers: HeaderMap,
    JsonBody(req): JsonBody<RenewRequest>,
) -> Result<Json<LeaseBody>, ApiError> {
    caller.check_scope(&app, "lease", &name)?;
    let owner = required_header(&headers, OWNER_HEADER)?;
    let ttl = ttl(req.ttl)?;
    let Some(mut lease) = crate::leases::held_by(app.leases(), &name, owner, ttl).await? else {
        return Err(ApiError::refused(
            StatusCode::CONFLICT,
            "not_owner",
            format!("lease '{name}' was released by this owner; acquire it again"),
            Some(&name),
        ));
    };
    app.leases().renew(&mut lease).await?;
    Ok(Json(body(&lease, app.config().clock.now())))
}

/// Releases a lease held by the owner in `Lease-Owner`.
#[utoipa::path(
    delete,
    path = "/v1/leases/{name}",
    tag = "leases",
    params(
        ("name" = inline(LeaseNameParam), Path, description = "The lease name"),
        ("Lease-Owner" = String, Header, description = "The owner id returned at acquire", pattern = r"^[\t\x20-\x7e]*$"),
    ),
    responses(
        (status = 204, description = "Released (or already released by this owner)"),
        (status = 400, description = "No `Lease-Owner`, or an invalid name (`bad_request`)", body = ErrorBody),
        (status = 403, description = "Outside the caller's scope (`forbidden`)", body = ErrorBody),
        (status = 409, description = "Not held by this owner (`not_owner`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn release_lease(
    State(app): State<AppState>,
    caller: Caller,
    ObjectKey(name): ObjectKey,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    caller.check_scope(&app, "lease", &name)?;
    let owner = required_header(&headers, OWNER_HEADER)?;
    release_held(app.leases(), &name, owner).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Releases lease `name` held by `owner` (fine when that owner already
/// released it; 409 `not_owner` when someone else holds it).
pub(crate) async fn release_held(leases: &Leases, name: &str, owner: &str) -> Result<(), ApiError> {
    if let Some(lease) = crate::leases::held_by(leases, name, owner, DEFAULT_TTL).await? {
        leases.release(&lease).await?;
    }
    Ok(())
}

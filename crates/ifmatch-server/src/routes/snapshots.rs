//! `/v1/snapshots/{name}`: versioned artifacts (seeds 000/001) over HTTP,
//! over [`ifmatch::snapshot`] and [`ifmatch::artifact`].
//!
//! A snapshot's ETag is its version number: `"3"`.
//!
//! | method | path | what |
//! |---|---|---|
//! | PUT | `/v1/snapshots/{name}` | publish the body as version n+1: **201** published, **200** superseded (a newer upload landed first); `If-Match: "n"` publishes only over version n (**412** naming the current version otherwise), `If-None-Match: *` only the first version |
//! | GET | `/v1/snapshots/{name}` | the current version, its `ETag`; **304** when `If-None-Match` names it (one small store read, no body) |
//! | GET | `/v1/snapshots/{name}/versions` | the retained versions, newest first |
//! | GET | `/v1/snapshots/{name}/versions/{version}` | a retained version's body |
//! | POST | `/v1/snapshots/{name}/rollback` | republish `{"version": n}` as a new version |
//! | POST | `/v1/snapshots/{name}/build` | take the build lease (`{"ttl", "wait"}` as for leases): **201** with the lease, **200** superseded when the builder waited for published a build started after this request, **409** `lease_held` |
//! | DELETE | `/v1/snapshots/{name}/build` | give the build lease back (`Lease-Owner`) |
//!
//! A publish (`PUT`) or rollback sent with an `Idempotency-Key` lands at
//! most once however often it is retried, even after `504 outcome_unknown`:
//! its request id derives from the key ([`crate::idempotency_key`]), and a
//! retry whose first request landed is answered 201 with that request's
//! version and `Idempotent-Replayed: true`.
//!
//! Names are 1–128 characters of `A-Z a-z 0-9 . _ -`. The build lease is the
//! lease [`ifmatch::snapshot::LeaseBuildGuard`] takes, so HTTP builders and
//! Rust publishers coalesce their rebuilds; it is an optimisation, never
//! needed for correctness: the publish is a conditional write either way.
//!
//! Scope: snapshots are the operator's; with `--user-prefixes` a user's
//! snapshots (and their build leases) live under the user's own prefix
//! ([`crate::auth::Caller::own_prefix`]), apart from everyone else's.

use axum::Json;
use axum::extract::{Extension, FromRequestParts, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::header::{CONTENT_TYPE, ETAG};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode};
use ifmatch::artifact::{self, BuildTurn, Latest};
use ifmatch::lease::Leases;
use ifmatch::snapshot::{
    PublishOutcome, Published, Snapshot, SnapshotConfig, Snapshots, VersionInfo,
};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody, snapshot_version};
use crate::idempotency_key::{IdempotentRequest, REPLAYED};
use crate::precondition::{Preconditions, Verdict, etag_for};
use crate::routes::extract::{Body, JsonBody, required_header};
use crate::routes::leases::{AcquireRequest, LeaseBody, OWNER_HEADER};

/// The routes of this group.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route(
            "/v1/snapshots/{name}",
            get(get_snapshot).put(publish_snapshot),
        )
        .route("/v1/snapshots/{name}/versions", get(list_versions))
        .route("/v1/snapshots/{name}/versions/{version}", get(get_version))
        .route("/v1/snapshots/{name}/rollback", post(rollback_snapshot))
        .route(
            "/v1/snapshots/{name}/build",
            post(acquire_build).delete(release_build),
        )
}

/// The `{name}` of a snapshot route, checked ([`ifmatch::snapshot::validate_name`]; 400 otherwise).
#[derive(Debug, Clone)]
pub struct SnapshotName(pub String);

/// A path parameter by name (400 when the path does not parse).
async fn path_param(parts: &mut Parts, state: &AppState, name: &str) -> Result<String, ApiError> {
    let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::BadRequest(format!("invalid path: {e}")))?;
    params
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .ok_or_else(|| ApiError::BadRequest(format!("the path has no {{{name}}}")))
}

impl FromRequestParts<AppState> for SnapshotName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let name = path_param(parts, state, "name").await?;
        ifmatch::snapshot::validate_name(&name)?;
        Ok(SnapshotName(name))
    }
}

/// The `{version}` of `/v1/snapshots/{name}/versions/{version}` (400 unless a number).
#[derive(Debug, Clone, Copy)]
pub struct VersionNumber(pub u64);

impl FromRequestParts<AppState> for VersionNumber {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let v = path_param(parts, state, "version").await?;
        v.parse().map(VersionNumber).map_err(|_| {
            ApiError::BadRequest(format!("snapshot version {v:?} is not a version number"))
        })
    }
}

/// The OpenAPI schema of `{name}`: 1–128 of `A-Z a-z 0-9 . _ -`, not `.` or `..`.
pub struct SnapshotNameParam;

impl utoipa::PartialSchema for SnapshotNameParam {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .max_length(Some(ifmatch::snapshot::MAX_NAME_LEN))
            .pattern(Some(
                r"^(?:[A-Za-z0-9_-][A-Za-z0-9._-]*|\.[A-Za-z0-9_-][A-Za-z0-9._-]*|\.\.[A-Za-z0-9._-]+)$",
            ))
            .description(Some(
                "The snapshot name: 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' and '-', not '.' or '..'",
            ))
            .into()
    }
}

impl utoipa::ToSchema for SnapshotNameParam {}

/// What a publish or rollback did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublishBody {
    /// The snapshot name.
    pub name: String,
    /// `published` (this body is the new current version) or `superseded`
    /// (a newer build landed first; this body was not needed).
    pub outcome: &'static str,
    /// The current version: the one published, or the one that superseded it.
    pub version: u64,
    /// Its ETag (`"<version>"`).
    pub etag: String,
    /// For a rollback: the version republished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back_from: Option<u64>,
}

/// One retained version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionBody {
    /// The version number.
    pub version: u64,
    /// Its ETag (`"<version>"`).
    pub etag: String,
    /// The body's size in bytes.
    pub size: u64,
    /// When its build started, in ms since the Unix epoch.
    pub build_started_ms: u64,
    /// When it was published, in ms since the Unix epoch.
    pub published_ms: u64,
    /// For a rollback: the version it republished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back_from: Option<u64>,
}

impl From<VersionInfo> for VersionBody {
    fn from(v: VersionInfo) -> Self {
        VersionBody {
            version: v.version,
            etag: etag(v.version),
            size: v.size,
            build_started_ms: v.build_started_ms,
            published_ms: v.published_ms,
            rolled_back_from: v.rolled_back_from,
        }
    }
}

/// The retained versions of a snapshot.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionsBody {
    /// The snapshot name.
    pub name: String,
    /// The retained versions, newest (current) first.
    pub versions: Vec<VersionBody>,
}

/// The body of a rollback.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The retained version to republish as the next version.
    pub version: u64,
}

fn etag(version: u64) -> String {
    etag_for(&snapshot_version(version))
}

fn etag_header(version: u64) -> HeaderValue {
    // A quoted number is always a valid header value.
    HeaderValue::try_from(etag(version)).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

/// The caller's snapshots: the operator's, or a user's under their own prefix.
fn snapshots(app: &AppState, caller: &Caller) -> Result<Snapshots, ApiError> {
    let scope = caller.own_prefix(app, "snapshot")?;
    let config = SnapshotConfig::default()
        .with_prefix(format!("{scope}{}", ifmatch::snapshot::DEFAULT_PREFIX))
        .with_policy(app.config().retry.clone())
        .with_clock(app.config().clock.clone());
    Ok(Snapshots::with_config(app.store().clone(), config))
}

/// The leases the caller's build leases are taken from.
fn build_leases(app: &AppState, caller: &Caller) -> Result<Leases, ApiError> {
    let scope = caller.own_prefix(app, "snapshot")?;
    Ok(app
        .leases()
        .clone()
        .with_prefix(format!("{}{scope}", ifmatch::lease::DEFAULT_PREFIX)))
}

fn published(name: &str, p: &Published) -> Response {
    let v = p.version();
    let body = PublishBody {
        name: name.to_string(),
        outcome: "published",
        version: v,
        etag: etag(v),
        rolled_back_from: p.info.rolled_back_from,
    };
    let mut r = (StatusCode::CREATED, [(ETAG, etag_header(v))], Json(body)).into_response();
    if p.replayed {
        r.headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    r
}

fn superseded(name: &str, by: u64) -> Response {
    let body = PublishBody {
        name: name.to_string(),
        outcome: "superseded",
        version: by,
        etag: etag(by),
        rolled_back_from: None,
    };
    (StatusCode::OK, [(ETAG, etag_header(by))], Json(body)).into_response()
}

fn snapshot_response(s: Snapshot) -> Response {
    let mut h = HeaderMap::new();
    h.insert(ETAG, etag_header(s.version()));
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    (h, s.body).into_response()
}

/// Publishes the body as the snapshot's next version.
#[utoipa::path(
    put,
    path = "/v1/snapshots/{name}",
    tag = "snapshots",
    params(
        ("name" = inline(SnapshotNameParam), Path, description = "The snapshot name"),
        ("If-Match" = Option<String>, Header, description = "Publish only over one of these versions (`\"n\"`), or * over any", pattern = r#"^[ \t]*(?:\*|(?:,[ \t]*)*(?:(?:W/)?"[!#-~]*"(?:[ \t]*,[ \t]*(?:,[ \t]*)*(?:W/)?"[!#-~]*")*)?[ \t]*(?:,[ \t]*)*)$"#),
        ("If-None-Match" = Option<String>, Header, description = "* : publish only the first version", pattern = r#"^[ \t]*(?:\*|(?:,[ \t]*)*(?:(?:W/)?"[!#-~]*"(?:[ \t]*,[ \t]*(?:,[ \t]*)*(?:W/)?"[!#-~]*")*)?[ \t]*(?:,[ \t]*)*)$"#),
    ),
    request_body(content = Vec<u8>, description = "The artifact", content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Published as the new current version (`ETag`: its version); with `Idempotent-Replayed: true`, an earlier request with the same `Idempotency-Key` published it", body = PublishBody),
        (status = 200, description = "Superseded: a build that reached the server later landed first; this body was not needed", body = PublishBody),
        (status = 403, description = "Outside the caller's scope (`forbidden`)", body = ErrorBody),
        (status = 409, description = "Other publishers kept winning (`conflict`)", body = ErrorBody),
        (status = 412, description = "Precondition failed: names the current version (`current_etag`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn publish_snapshot(
    State(app): State<AppState>,
    caller: Caller,
    SnapshotName(name): SnapshotName,
    idempotent: Option<Extension<IdempotentRequest>>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let snaps = snapshots(&app, &caller)?;
    let pre = Preconditions::from_headers(&headers)?;
    let precondition = |current: Option<u64>| {
        pre.evaluate(current.map(snapshot_version).as_ref(), false) == Verdict::Proceed
    };
    let outcome = match &idempotent {
        Some(Extension(i)) => {
            artifact::publish_upload_once(&snaps, &name, &i.publish_id, body, precondition).await
        }
        None => artifact::publish_upload(&snaps, &name, body, precondition).await,
    }?;
    Ok(match outcome {
        PublishOutcome::Published(p) => published(&name, &p),
        PublishOutcome::Superseded { by, .. } => superseded(&name, by),
    })
}

/// Reads the current version of a snapshot.
#[utoipa::path(
    get,
    path = "/v1/snapshots/{name}",
    tag = "snapshots",
    params(
        ("name" = inline(SnapshotNameParam), Path, description = "The snapshot name"),
        ("If-None-Match" = Option<String>, Header, description = "304 when the current version is one of these (`\"n\"`)", pattern = r#"^[ \t]*(?:\*|(?:,[ \t]*)*(?:(?:W/)?"[!#-~]*"(?:[ \t]*,[ \t]*(?:,[ \t]*)*(?:W/)?"[!#-~]*")*)?[ \t]*(?:,[ \t]*)*)$"#),
        ("If-Match" = Option<String>, Header, description = "412 unless the current version is one of these", pattern = r#"^[ \t]*(?:\*|(?:,[ \t]*)*(?:(?:W/)?"[!#-~]*"(?:[ \t]*,[ \t]*(?:,[ \t]*)*(?:W/)?"[!#-~]*")*)?[ \t]*(?:,[ \t]*)*)$"#),
    ),
    responses(
        (status = 200, description = "The current version's body; `ETag` is its version", content_type = "application/octet-stream"),
        (status = 304, description = "Not modified: the current version is the one named (no body)"),
        (status = 403, description = "Outside the caller's scope (`forbidden`)", body = ErrorBody),
        (status = 404, description = "Nothing published under this name (`not_found`)", body = ErrorBody),
        (status = 412, description = "Precondition failed", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_snapshot(
    State(app): State<AppState>,
    caller: Caller,
    SnapshotName(name): SnapshotName,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let snaps = snapshots(&app, &caller)?;
    let pre = Preconditions::from_headers(&headers)?;
    let mut verdict = Verdict::Proceed;
    let check = |info: &VersionInfo| {
        verdict = pre.evaluate(Some(&snapshot_version(info.version)), true);
        verdict != Verdict::Proceed
    };
    let latest = artifact::latest_unless(&snaps, &name, (!pre.is_empty()).then_some(check)).await?;
    match latest {
        Latest::Full(s) => Ok(snapshot_response(s)),
        Latest::Fresh(info) if verdict == Verdict::NotModified => Ok((
            StatusCode::NOT_MODIFIED,
            [(ETAG, etag_header(info.version))],
        )
            .into_response()),
        Latest::Fresh(info) => Err(ApiError::PreconditionFailed {
            key: name,
            current: Some(snapshot_version(info.version)),
        }),
    }
}

/// Lists the retained versions of a snapshot, newest first.
#[utoipa::path(
    get,
    path = "/v1/snapshots/{name}/versions",
    tag = "snapshots",
    params(("name" = inline(SnapshotNameParam), Path, description = "The snapshot name")),
    responses(
        (status = 200, description = "The retained versions", body = VersionsBody),
        (status = 403, description = "Outside the caller's scope (`forbidden`)", body = ErrorBody),
        (status = 404, description = "Nothing published under this name (`not_found`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_versions(
    State(app): State<AppState>,
    caller: Caller,
    SnapshotName(name): SnapshotName,
) -> Result<Json<VersionsBody>, ApiError> {
    let versions = snapshots(&app, &caller)?.versions(&name).await?;
    Ok(Json(VersionsBody {
        name,
        versions: versions.into_iter().map(VersionBody::from).collect(),
    }))
}

/// Reads a retained version of a snapshot.
#[utoipa::path(
    get,
    path = "/v1/snapshots/{name}/versions/{version}",
    tag = "snapshots",
    params(
        ("name" = inline(SnapshotNameParam), Path, description = "The snapshot name"),
        ("version" = u64, Path, description = "The version number"),
    ),
    responses(
        (status = 200, description = "The version's body; `ETag` is its version", content_type = "application/octet-stream"),
        (status = 403, description = "Outside the caller's scope (`forbidden`)", body = ErrorBody),
        (status = 404, description = "No such snapshot, or the version is not retained (`not_found`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_version(
    State(app): State<AppState>,
    caller: Caller,
    SnapshotName(name): SnapshotName,
    VersionNumber(version): VersionNumber,
) -> Result<Response, ApiError> {
    let s = snapshots(&app, &caller)?.get(&name, Some(version)).await?;
    Ok(snapshot_response(s))
}

/// Republishes a retained version as the snapshot's next version.
#[utoipa::path(
    post,
    path = "/v1/snapshots/{name}/rollback",
    tag = "snapshots",
    params(("name" = inline(SnapshotNameParam), Path, description = "The snapshot name")),
    request_body(content = RollbackRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Republished as the new current version; with `Idempotent-Replayed: true`, an earlier request with the same `Idempotency-Key` republished it", body = PublishBody),
        (status = 403, description = "Outside the caller's scope (`forbidden`)", body = ErrorBody),
        (status = 404, description = "No such snapshot, or the version is not retained (`not_found`)", body = ErrorBody),
        (status = 409, description = "Other publishers kept winning (`conflict`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn rollback_snapshot(
    State(app): State<AppState>,
    caller: Caller,
    SnapshotName(name): SnapshotName,
    idempotent: Option<Extension<IdempotentRequest>>,
    JsonBody(req): JsonBody<RollbackRequest>,
) -> Result<Response, ApiError> {
    let snaps = snapshots(&app, &caller)?;
    let p = match &idempotent {
        Some(Extension(i)) => snaps.rollback_once(&name, req.version, &i.publish_id).await,
        None => snaps.rollback(&name, req.version).await,
    }?;
    Ok(published(&name, &p))
}

/// Takes the build lease of a snapshot.
#[utoipa::path(
    post,
    path = "/v1/snapshots/{name}/build",
    tag = "snapshots",
    params(("name" = inline(SnapshotNameParam), Path, description = "The snapshot name")),
    request_body(content = AcquireRequest, description = "TTL and wait, in seconds (both optional)", content_type = "application/json"),
    responses(
        (status = 201, description = "Build: the lease is yours (send `owner` back as `Lease-Owner` to release it)", body = LeaseBody),
        (status = 200, description = "Superseded: the builder this request waited for published a build started after it", body = PublishBody),
        (status = 403, description = "Outside the caller's scope (`forbidden`)", body = ErrorBody),
        (status = 409, description = "Another builder holds it (`lease_held`, with `holder` and `expires_in_ms`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn acquire_build(
    State(app): State<AppState>,
    caller: Caller,
    SnapshotName(name): SnapshotName,
    JsonBody(req): JsonBody<AcquireRequest>,
) -> Result<Response, ApiError> {
    let snaps = snapshots(&app, &caller)?;
    let leases = build_leases(&app, &caller)?;
    let (ttl, wait) = crate::routes::leases::acquire_terms(&app, &req)?;
    Ok(
        match artifact::acquire_build(&snaps, &leases, &name, ttl, wait).await? {
            BuildTurn::Build(lease) => {
                let body = crate::routes::leases::body(&lease, app.config().clock.now());
                (StatusCode::CREATED, Json(body)).into_response()
            }
            BuildTurn::Superseded(info) => superseded(&name, info.version),
        },
    )
}

/// Gives the build lease of a snapshot back.
#[utoipa::path(
    delete,
    path = "/v1/snapshots/{name}/build",
    tag = "snapshots",
    params(
        ("name" = inline(SnapshotNameParam), Path, description = "The snapshot name"),
        ("Lease-Owner" = String, Header, description = "The owner id returned when the build lease was taken", pattern = r"^[\t\x20-\x7e]*$"),
    ),
    responses(
        (status = 204, description = "Released (or already released by this owner)"),
        (status = 403, description = "Outside the caller's scope (`forbidden`)", body = ErrorBody),
        (status = 409, description = "Not held by this owner (`not_owner`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn release_build(
    State(app): State<AppState>,
    caller: Caller,
    SnapshotName(name): SnapshotName,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let leases = build_leases(&app, &caller)?;
    let owner = required_header(&headers, OWNER_HEADER)?;
    crate::routes::leases::release_held(&leases, &artifact::build_lease_name(&name), owner).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_quoted_version_numbers() {
        assert_eq!(etag(42), "\"42\"");
        assert_eq!(etag_header(7), "\"7\"");
    }
}

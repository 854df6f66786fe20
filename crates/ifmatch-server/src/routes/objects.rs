//! `/v1/objects/{key}`: GET, HEAD, PUT, PATCH and DELETE of one key.
//!
//! Handlers only parse (key, preconditions, metadata headers, body), call one
//! function of [`crate::objects`] and render. Response conventions:
//!
//! - the version travels as a strong `ETag` (`"<version>"`);
//! - GET and HEAD: 200 with `Content-Type` (the one given at PUT, else
//!   `application/octet-stream`) and user metadata as `x-ifmatch-meta-NAME`
//!   headers; 304 (with the `ETag`) when `If-None-Match` matches;
//! - PUT: **201 Created** when the key did not exist, **200 OK** when it
//!   replaced a value, both with the `ETag` header and a JSON body
//!   `{"key": ..., "etag": ...}`; a `Content-Type` is stored as the
//!   `content-type` metadata entry, `x-ifmatch-meta-NAME: VALUE` headers as
//!   the `NAME` entry (names: a-z, 0-9, `-`, `_`; values: printable ASCII);
//! - PATCH: 200 with the new value, its `ETag` and `Content-Type`;
//! - DELETE: 204 (also for a key that is already absent, without preconditions);
//! - PUT, PATCH and DELETE take a lease's `Fencing-Token` ([`crate::fenced`]):
//!   **409 `fenced`** when the key was written with a newer token. GET and
//!   HEAD answer a fenced value as it was given (without its fencing header).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use ifmatch::Version;
use ifmatch::store::Metadata;
use serde::Serialize;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::fenced;
use crate::idempotency_key::IdempotentRequest;
use crate::objects::{self, Read, ReadMeta};
use crate::patch::{Patch, PatchFormat};
use crate::precondition::{Preconditions, etag_for};
use crate::routes::extract::{Body, ObjectKey, ObjectKeyParam};

/// The prefix of user metadata headers.
pub const META_HEADER_PREFIX: &str = "x-ifmatch-meta-";

/// The metadata entry that holds the `Content-Type` given at PUT.
pub const CONTENT_TYPE_META: &str = "content-type";

/// The routes of this group.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route(
        "/v1/objects/{*key}",
        get(get_object)
            .head(head_object)
            .put(put_object)
            .patch(patch_object)
            .delete(delete_object),
    )
}

/// The JSON body of a successful PUT.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WriteResult {
    /// The key written.
    pub key: String,
    /// Its new strong ETag.
    pub etag: String,
}

/// The name of an RFC 6902 operation.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum JsonPatchOp {
    /// Adds a value (`/-` appends to an array).
    Add,
    /// Removes the value at `path`.
    Remove,
    /// Replaces the value at `path`.
    Replace,
    /// Moves the value at `from` to `path`.
    Move,
    /// Copies the value at `from` to `path`.
    Copy,
    /// Fails the patch unless the value at `path` equals `value`.
    Test,
}

/// One operation of an RFC 6902 JSON Patch (only described here: the patch
/// is parsed by [`crate::patch`]).
#[derive(utoipa::ToSchema)]
pub struct JsonPatchOperation {
    /// The operation.
    pub op: JsonPatchOp,
    /// A JSON Pointer (RFC 6901) to the target.
    #[schema(pattern = "^(/([^~/]|~[01])*)*$", example = "/modifications/-")]
    pub path: String,
    /// The value (`add`, `replace`, `test`).
    #[schema(value_type = Option<serde_json::Value>)]
    pub value: Option<serde_json::Value>,
    /// A JSON Pointer to the source (`move`, `copy`).
    #[schema(pattern = "^(/([^~/]|~[01])*)*$")]
    pub from: Option<String>,
}

fn etag_header(v: &Version) -> HeaderValue {
    // etag_for only produces visible ASCII.
    HeaderValue::from_str(&etag_for(v)).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

/// ETag, Content-Type and metadata headers of a stored value.
fn object_headers(version: &Version, metadata: &Metadata) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(ETAG, etag_header(version));
    let ct = metadata
        .get(CONTENT_TYPE_META)
        .and_then(|v| HeaderValue::from_str(v).ok())
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    h.insert(CONTENT_TYPE, ct);
    for (name, value) in objects::user_metadata(metadata) {
        if name == CONTENT_TYPE_META {
            continue;
        }
        let header = HeaderName::from_bytes(format!("{META_HEADER_PREFIX}{name}").as_bytes());
        if let (Ok(n), Ok(v)) = (header, HeaderValue::from_str(&value)) {
            h.insert(n, v);
        }
    }
    h
}

fn not_modified(version: &Version) -> Response {
    (StatusCode::NOT_MODIFIED, [(ETAG, etag_header(version))]).into_response()
}

/// The metadata a PUT carries: `Content-Type` and `x-ifmatch-meta-*` headers.
fn metadata_from_headers(headers: &HeaderMap) -> Result<Metadata, ApiError> {
    let mut md = Metadata::new();
    if let Some(ct) = headers.get(CONTENT_TYPE) {
        let ct = ct
            .to_str()
            .map_err(|_| ApiError::BadRequest("Content-Type must be printable ASCII".into()))?;
        md.insert(CONTENT_TYPE_META.into(), ct.to_string());
    }
    for (name, value) in headers {
        let Some(meta) = name.as_str().strip_prefix(META_HEADER_PREFIX) else {
            continue;
        };
        if meta.starts_with(ifmatch::key::RESERVED_METADATA_PREFIX) || meta == CONTENT_TYPE_META {
            return Err(ApiError::BadRequest(format!(
                "metadata name {meta:?} is reserved (use the Content-Type header for the content type)"
            )));
        }
        let value = value.to_str().map_err(|_| {
            ApiError::BadRequest(format!("metadata value of {name} must be printable ASCII"))
        })?;
        md.insert(meta.to_string(), value.to_string());
    }
    ifmatch::key::validate_metadata(&md).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(md)
}

/// Reads a value.
#[utoipa::path(
    get,
    path = "/v1/objects/{key}",
    tag = "objects",
    params(
        ("key" = inline(ObjectKeyParam), Path, description = "The key (may contain '/')"),
        ("If-None-Match" = Option<String>, Header, description = "304 if one of these ETags (weak comparison) or * matches", pattern = r#"^[ \t]*(?:\*|(?:,[ \t]*)*(?:(?:W/)?"[!#-~]*"(?:[ \t]*,[ \t]*(?:,[ \t]*)*(?:W/)?"[!#-~]*")*)?[ \t]*(?:,[ \t]*)*)$"#),
        ("If-Match" = Option<String>, Header, description = "412 unless one of these ETags (strong comparison) or * matches", pattern = r#"^[ \t]*(?:\*|(?:,[ \t]*)*(?:(?:W/)?"[!#-~]*"(?:[ \t]*,[ \t]*(?:,[ \t]*)*(?:W/)?"[!#-~]*")*)?[ \t]*(?:,[ \t]*)*)$"#),
    ),
    responses(
        (status = 200, description = "The value, with its ETag"),
        (status = 304, description = "Not modified"),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 412, description = "Precondition failed", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_object(
    State(app): State<AppState>,
    caller: Caller,
    ObjectKey(key): ObjectKey,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.check_scope(&app, "object", &key)?;
    let pre = Preconditions::from_headers(&headers)?;
    Ok(
        match objects::read(app.store().as_ref(), &key, &pre).await? {
            Read::NotModified(v) => not_modified(&v),
            Read::Full(obj) => (
                object_headers(&obj.meta.version, &obj.meta.metadata),
                obj.body,
            )
                .into_response(),
        },
    )
}

/// Reads a value's ETag, size and metadata.
#[utoipa::path(
    head,
    path = "/v1/objects/{key}",
    tag = "objects",
    params(("key" = inline(ObjectKeyParam), Path, description = "The key")),
    responses(
        (status = 200, description = "ETag, Content-Length and metadata headers"),
        (status = 304, description = "Not modified"),
        (status = 404, description = "No such key"),
        (status = 412, description = "Precondition failed"),
    ),
    security(("bearer" = []))
)]
pub async fn head_object(
    State(app): State<AppState>,
    caller: Caller,
    ObjectKey(key): ObjectKey,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.check_scope(&app, "object", &key)?;
    let pre = Preconditions::from_headers(&headers)?;
    Ok(
        match objects::read_meta(app.store().as_ref(), &key, &pre).await? {
            ReadMeta::NotModified(v) => not_modified(&v),
            ReadMeta::Full(meta) => {
                let mut h = object_headers(&meta.version, &meta.metadata);
                h.insert(CONTENT_LENGTH, HeaderValue::from(meta.size));
                (h, Bytes::new()).into_response()
            }
        },
    )
}

/// Writes a value.
#[utoipa::path(
    put,
    path = "/v1/objects/{key}",
    tag = "objects",
    params(
        ("key" = inline(ObjectKeyParam), Path, description = "The key"),
        ("If-Match" = Option<String>, Header, description = "Write only over one of these ETags (or * for any existing value)", pattern = r#"^[ \t]*(?:\*|(?:,[ \t]*)*(?:(?:W/)?"[!#-~]*"(?:[ \t]*,[ \t]*(?:,[ \t]*)*(?:W/)?"[!#-~]*")*)?[ \t]*(?:,[ \t]*)*)$"#),
        ("If-None-Match" = Option<String>, Header, description = "* : create only", pattern = r#"^[ \t]*(?:\*|(?:,[ \t]*)*(?:(?:W/)?"[!#-~]*"(?:[ \t]*,[ \t]*(?:,[ \t]*)*(?:W/)?"[!#-~]*")*)?[ \t]*(?:,[ \t]*)*)$"#),
        ("Fencing-Token" = Option<u64>, Header, description = "A lease's fencing token: 409 `fenced` if the key was written with a newer one (see /v1/leases)"),
    ),
    request_body(content = Vec<u8>, description = "The value", content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Created", body = WriteResult),
        (status = 200, description = "Replaced", body = WriteResult),
        (status = 409, description = "A `Fencing-Token` older than the key's (`fenced`), or other writers kept winning (`conflict`); names the current ETag", body = ErrorBody),
        (status = 412, description = "Precondition failed; names the current ETag", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 428, description = "Precondition required (--require-preconditions)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn put_object(
    State(app): State<AppState>,
    caller: Caller,
    ObjectKey(key): ObjectKey,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    caller.check_scope(&app, "object", &key)?;
    let pre = Preconditions::from_headers(&headers)?;
    let metadata = metadata_from_headers(&headers)?;
    let require = app.config().require_preconditions;
    let store = app.store().as_ref();
    let w = match fenced::fencing_token(&headers)? {
        None => objects::write(store, &key, body, metadata, &pre, require).await?,
        Some(token) => {
            let retry = &app.config().retry;
            fenced::write(store, &key, body, metadata, &pre, require, token, retry).await?
        }
    };
    let status = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let result = WriteResult {
        key,
        etag: etag_for(&w.version),
    };
    Ok((status, [(ETAG, etag_header(&w.version))], Json(result)).into_response())
}

/// Patches a JSON value.
#[utoipa::path(
    patch,
    path = "/v1/objects/{key}",
    tag = "objects",
    params(
        ("key" = inline(ObjectKeyParam), Path, description = "The key"),
        ("If-Match" = Option<String>, Header, description = "Strict: 412 unless the value is still at this ETag. Without it the server re-applies the patch on conflicts.", pattern = r#"^[ \t]*(?:\*|(?:,[ \t]*)*(?:(?:W/)?"[!#-~]*"(?:[ \t]*,[ \t]*(?:,[ \t]*)*(?:W/)?"[!#-~]*")*)?[ \t]*(?:,[ \t]*)*)$"#),
        ("Fencing-Token" = Option<u64>, Header, description = "A lease's fencing token: 409 `fenced` if the key was written with a newer one (see /v1/leases)"),
    ),
    request_body(
        description = "An RFC 7396 merge patch or an RFC 6902 JSON Patch, by Content-Type",
        content(
            (serde_json::Value = "application/merge-patch+json"),
            (Vec<JsonPatchOperation> = "application/json-patch+json"),
        )
    ),
    responses(
        (status = 200, description = "The patched value, with its new ETag; its Content-Type is the one stored at PUT, else `application/json`", content_type = "*/*"),
        (status = 400, description = "A malformed patch document, key or header (`bad_request`)", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 409, description = "Other writers kept winning (`conflict`), the value is not JSON (`not_json`), or a `Fencing-Token` older than the key's (`fenced`)", body = ErrorBody),
        (status = 412, description = "Precondition failed", body = ErrorBody),
        (status = 415, description = "Not a patch media type", body = ErrorBody),
        (status = 422, description = "The patch does not apply", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn patch_object(
    State(app): State<AppState>,
    caller: Caller,
    ObjectKey(key): ObjectKey,
    idempotent: Option<Extension<IdempotentRequest>>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    caller.check_scope(&app, "object", &key)?;
    let pre = Preconditions::from_headers(&headers)?;
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format =
        PatchFormat::from_content_type(ct).ok_or(ApiError::UnsupportedMediaType(ct.to_string()))?;
    let patch = Patch::parse(format, &body).map_err(|source| ApiError::Patch {
        key: key.clone(),
        source,
    })?;
    let token = fenced::fencing_token(&headers)?;
    let cfg = app.config();
    let write_id = idempotent.as_ref().map(|Extension(i)| i.write_id.as_str());
    let p = objects::patch(
        app.updater(),
        &key,
        &patch,
        &pre,
        &cfg.retry,
        token,
        write_id,
    )
    .await?;
    let mut h = object_headers(&p.version, &p.metadata);
    if !p.metadata.contains_key(CONTENT_TYPE_META) {
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    Ok((h, p.body).into_response())
}

/// Deletes a value.
#[utoipa::path(
    delete,
    path = "/v1/objects/{key}",
    tag = "objects",
    params(
        ("key" = inline(ObjectKeyParam), Path, description = "The key"),
        ("If-Match" = Option<String>, Header, description = "Delete only at one of these ETags", pattern = r#"^[ \t]*(?:\*|(?:,[ \t]*)*(?:(?:W/)?"[!#-~]*"(?:[ \t]*,[ \t]*(?:,[ \t]*)*(?:W/)?"[!#-~]*")*)?[ \t]*(?:,[ \t]*)*)$"#),
        ("Fencing-Token" = Option<u64>, Header, description = "A lease's fencing token: 409 `fenced` if the key was written with a newer one (see /v1/leases)"),
    ),
    responses(
        (status = 204, description = "Deleted (or already absent, without preconditions)"),
        (status = 409, description = "A `Fencing-Token` older than the key's (`fenced`), or other writers kept winning (`conflict`)", body = ErrorBody),
        (status = 412, description = "Precondition failed", body = ErrorBody),
        (status = 428, description = "Precondition required (--require-preconditions)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_object(
    State(app): State<AppState>,
    caller: Caller,
    ObjectKey(key): ObjectKey,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    caller.check_scope(&app, "object", &key)?;
    let pre = Preconditions::from_headers(&headers)?;
    let require = app.config().require_preconditions;
    let store = app.store().as_ref();
    match fenced::fencing_token(&headers)? {
        None => objects::remove(store, &key, &pre, require).await?,
        Some(token) => {
            let retry = &app.config().retry;
            fenced::remove(store, &key, &pre, require, token, retry).await?
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert("x-ifmatch-meta-owner", HeaderValue::from_static("alice"));
        let md = metadata_from_headers(&h).unwrap();
        assert_eq!(md.get("content-type").unwrap(), "application/json");
        assert_eq!(md.get("owner").unwrap(), "alice");
        h.insert("x-ifmatch-meta-ifmatch-wid", HeaderValue::from_static("x"));
        assert!(metadata_from_headers(&h).is_err());
    }
}

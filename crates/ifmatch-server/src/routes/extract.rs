//! Extractors that fail with JSON errors: the object key from the path, the
//! request body, the query string.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use bytes::Bytes;
use http::StatusCode;
use http::request::Parts;

use crate::AppState;
use crate::error::ApiError;

/// The `{*key}` of a route, percent-decoded (validated later by the store).
#[derive(Debug, Clone)]
pub struct ObjectKey(pub String);

impl FromRequestParts<AppState> for ObjectKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(k)| ObjectKey(k))
            .map_err(|e| ApiError::BadRequest(format!("invalid key in the path: {e}")))
    }
}

/// The whole request body, within the configured limit (413 beyond).
#[derive(Debug, Clone)]
pub struct Body(pub Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge {
                    limit: state.config().body_limit,
                })
            }
            Err(e) => Err(ApiError::BadRequest(format!(
                "cannot read the request body: {e}"
            ))),
        }
    }
}

/// A JSON request body (400 with a JSON error when it does not parse; an
/// empty body is read as `{}` so every field may default).
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<T: serde::de::DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let Body(bytes) = Body::from_request(req, state).await?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    }
}

/// The query string as `T` (400 with a JSON error when it does not parse).
#[derive(Debug, Clone)]
pub struct QueryParams<T>(pub T);

impl<T: serde::de::DeserializeOwned> FromRequestParts<AppState> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| QueryParams(q))
            .map_err(|e| ApiError::BadRequest(format!("invalid query string: {}", e.body_text())))
    }
}

/// A required header's value as text (400 when missing or not text).
pub fn required_header<'h>(headers: &'h http::HeaderMap, name: &str) -> Result<&'h str, ApiError> {
    headers
        .get(name)
        .ok_or_else(|| ApiError::BadRequest(format!("the {name} header is required")))?
        .to_str()
        .map_err(|_| ApiError::BadRequest(format!("the {name} header must be printable ASCII")))
}

/// The rules of a key ([`ifmatch::key::validate_key`]) as a JSON Schema
/// pattern: `/`-separated segments, none empty, `.` or `..`, without control
/// characters or backslashes (so no leading, trailing or doubled `/`).
pub const KEY_PATTERN: &str = concat!(
    r"^(?:[^./\\\x00-\x1f\x7f-\x9f][^/\\\x00-\x1f\x7f-\x9f]*",
    r"|\.[^./\\\x00-\x1f\x7f-\x9f][^/\\\x00-\x1f\x7f-\x9f]*",
    r"|\.\.[^/\\\x00-\x1f\x7f-\x9f]+)",
    r"(?:/(?:[^./\\\x00-\x1f\x7f-\x9f][^/\\\x00-\x1f\x7f-\x9f]*",
    r"|\.[^./\\\x00-\x1f\x7f-\x9f][^/\\\x00-\x1f\x7f-\x9f]*",
    r"|\.\.[^/\\\x00-\x1f\x7f-\x9f]+))*$"
);

/// The schema of a key in a path, stored under `prefix`: the key rules, and
/// at most [`ifmatch::key::MAX_KEY_BYTES`] bytes with the prefix.
fn key_schema(prefix: &str, what: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    let max = ifmatch::key::MAX_KEY_BYTES - prefix.len();
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(KEY_PATTERN))
        .description(Some(format!(
            "{what}: at most {max} bytes of UTF-8 in '/'-separated segments; \
             no empty, '.' or '..' segment, control character or backslash \
             (percent-encode it in the URL; '/' may be sent as is)"
        )))
        .into()
}

macro_rules! key_param {
    ($(#[$doc:meta])* $ty:ident, $prefix:expr, $what:expr) => {
        $(#[$doc])*
        pub struct $ty;

        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
                key_schema($prefix, $what)
            }
        }

        impl utoipa::ToSchema for $ty {}
    };
}

key_param!(
    /// The OpenAPI schema of `{key}` in `/v1/objects/{key}`.
    ObjectKeyParam,
    "",
    "The object key"
);
key_param!(
    /// The OpenAPI schema of `{name}` in `/v1/leases/{name}`.
    LeaseNameParam,
    ifmatch::lease::DEFAULT_PREFIX,
    "The lease name"
);
key_param!(
    /// The OpenAPI schema of `{key}` in `/v1/idempotency/{key}`.
    IdempotencyKeyParam,
    ifmatch::idempotency::DEFAULT_PREFIX,
    "The idempotency key"
);

/// The query string, parsed into `T` (400 with a JSON error when it does not parse).
#[derive(Debug, Clone)]
pub struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned> FromRequestParts<AppState> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| Query(q))
            .map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))
    }
}

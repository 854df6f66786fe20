//! Extractors that fail with JSON errors: the object key from the path, the request body.

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

/// A required header's value as text (400 when missing or not text).
pub fn required_header<'h>(headers: &'h http::HeaderMap, name: &str) -> Result<&'h str, ApiError> {
    headers
        .get(name)
        .ok_or_else(|| ApiError::BadRequest(format!("the {name} header is required")))?
        .to_str()
        .map_err(|_| ApiError::BadRequest(format!("the {name} header must be printable ASCII")))
}

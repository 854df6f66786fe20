//! The `Idempotency-Key` request header (IETF httpapi draft "The
//! Idempotency-Key HTTP Header Field") on the non-idempotent requests — POST,
//! PATCH, and the snapshot publish `PUT /v1/snapshots/{name}` (which adds a
//! version each time) — built on the library's own idempotency primitive.
//!
//! A client that got no answer, or `504 outcome_unknown`, sends the same
//! request again with the same key and gets the original outcome, never a
//! second application:
//!
//! - The first request with a key **claims** it (an idempotency record under
//!   `http-idempotency/`, per caller) with a fingerprint of the request:
//!   method, path and query, `Content-Type`, the precondition and fencing
//!   headers, and a SHA-256 of the body.
//! - When the handler answers with a final outcome (2xx, 3xx, 4xx), the
//!   answer — status, `ETag`, `Content-Type`, `Location`, and the body up to
//!   [`MAX_STORED_BODY`] — is stored in the record. A retry gets it back, with
//!   `Idempotent-Replayed: true` (a larger body is replayed empty, with
//!   `Idempotent-Body-Omitted: true`: re-read the resource).
//! - When the outcome is unknown (504) or the store failed (5xx), the claim
//!   is given up, so the retry runs the request again. That is safe because
//!   the handlers derive their write identity from the key: PATCH's update
//!   loop uses a write id, `POST /v1/db` a commit id, and a snapshot publish
//!   or rollback a request id, computed from the caller, the key and the
//!   fingerprint ([`IdempotentRequest`]), so the retry finds the first
//!   request's change if it landed (and returns success without applying it
//!   again: a publish or rollback answers 201 with the version the first
//!   request created, with `Idempotent-Replayed: true`), and otherwise the
//!   two can land at most once between them.
//! - Routes without a write identity of their own (a lease acquire, a
//!   claim) are protected only while their answer is known: after an
//!   unknown outcome the retry runs them again.
//! - The same key with a different request: **422** `idempotency_key_reused`.
//!   A retry while the first request still runs: **409**
//!   `idempotency_in_progress` with `Retry-After`. A claim whose request died
//!   goes stale after twice the request timeout and is taken over.
//! - The handler runs under a deadline a little shorter than the request
//!   timeout, so the claim is always given up or completed before the
//!   server's own timeout answers.
//!
//! Keys are 1–255 printable ASCII characters, sent as a structured-field
//! string (`Idempotency-Key: "8e03978e-40d5"`) or bare. Records expire after
//! a day ([`RECORD_TTL`]); reusing a key for the same request within that
//! day returns the first outcome. `POST /v1/sessions` (login) refuses the
//! header: its answer carries a session token, which is never stored.

use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use ifmatch::idempotency::{Claim, Idempotency, IdempotencyError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::{MaybeCaller, Principal};
use crate::error::ApiError;

/// The request header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The response header on a replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";

/// The longest response body stored for replay (larger ones replay empty).
pub const MAX_STORED_BODY: usize = 64 * 1024;

/// How long a completed record is kept.
pub const RECORD_TTL: Duration = Duration::from_secs(24 * 3600);

/// The longest accepted key.
pub const MAX_KEY_LEN: usize = 255;

/// The key prefix of the records in the store.
pub const RECORD_PREFIX: &str = "http-idempotency/";

/// What a handler learns from a request sent with an `Idempotency-Key`:
/// identities of its change that every retry of the same request shares.
#[derive(Debug, Clone)]
pub struct IdempotentRequest {
    /// A write id for the update loop (`ifmatch::update::update_with_id`).
    pub write_id: String,
    /// A commit id for tenant databases (`TenantDbs::execute_once`).
    pub commit_id: String,
    /// A request id for snapshot publishes and rollbacks
    /// (`Snapshots::publish_once`, `Snapshots::rollback_once`).
    pub publish_id: String,
}

/// Whether a request with `method` to `path` is one the middleware handles:
/// every POST and PATCH (login among them, to refuse the header), and the
/// snapshot publish `PUT /v1/snapshots/{name}`. `path` may be a concrete
/// path or the route's template (for the OpenAPI document).
pub fn takes_key(method: &Method, path: &str) -> bool {
    match *method {
        Method::POST | Method::PATCH => true,
        Method::PUT => path
            .strip_prefix("/v1/snapshots/")
            .is_some_and(|name| !name.is_empty() && !name.contains('/')),
        _ => false,
    }
}

/// The idempotency records of HTTP requests, for a server whose request
/// timeout is `request_timeout`.
pub fn records(app_idempotency: Idempotency, request_timeout: Duration) -> Idempotency {
    app_idempotency
        .with_prefix(RECORD_PREFIX)
        .with_in_progress_timeout(request_timeout * 2)
        .with_completed_ttl(RECORD_TTL)
}

/// An answer as stored for replay.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    status: u16,
    headers: Vec<(String, String)>,
    /// The body in base64; `None` when it was larger than [`MAX_STORED_BODY`].
    body: Option<String>,
}

/// The fingerprint of a request: what must be equal for two requests with
/// one key to be "the same request".
#[derive(Debug, Serialize)]
struct Fingerprint<'a> {
    method: &'a str,
    target: &'a str,
    headers: Vec<(&'static str, Option<&'a str>)>,
    body_sha256: String,
}

/// The headers that are part of a request's identity.
const FINGERPRINT_HEADERS: [&str; 4] =
    ["content-type", "if-match", "if-none-match", "fencing-token"];

/// The headers stored with an answer.
const STORED_HEADERS: [HeaderName; 4] = [
    header::ETAG,
    header::CONTENT_TYPE,
    header::LOCATION,
    header::RETRY_AFTER,
];

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Parses the header value: an sf-string (`"..."`) or a bare token.
fn parse_key(value: &HeaderValue) -> Result<String, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "Idempotency-Key must be 1-{MAX_KEY_LEN} printable ASCII characters, as a quoted string (\"...\")"
        ))
    };
    let raw = value.to_str().map_err(|_| bad())?.trim();
    let key = match raw.strip_prefix('"') {
        Some(rest) => {
            let inner = rest.strip_suffix('"').ok_or_else(bad)?;
            if inner.contains('"') || inner.contains('\\') {
                return Err(bad());
            }
            inner
        }
        None => raw,
    };
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.bytes().all(|b| (0x20..0x7f).contains(&b));
    if ok { Ok(key.to_string()) } else { Err(bad()) }
}

/// Who the records of a caller belong to (keys of one caller never meet
/// another's): a user by their immutable account id, so a new account that
/// reuses a freed username never sees the old account's answers.
fn scope(caller: &Option<Principal>) -> String {
    match caller {
        Some(Principal::Operator) => "operator".into(),
        Some(Principal::User(user)) => {
            format!("user-{}", &hex(&Sha256::digest(user.id.as_bytes()))[..32])
        }
        None => "anonymous".into(),
    }
}

fn refused(status: StatusCode, kind: &'static str, message: String) -> ApiError {
    ApiError::Refused {
        status,
        kind,
        message,
        key: None,
    }
}

/// The middleware; see the module docs. Requests without the header, and
/// requests that take none ([`takes_key`]), pass through untouched.
pub async fn middleware(
    State(app): State<AppState>,
    MaybeCaller(caller): MaybeCaller,
    request: Request,
    next: Next,
) -> Response {
    let Some(value) = request.headers().get(IDEMPOTENCY_KEY).cloned() else {
        return next.run(request).await;
    };
    if !takes_key(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    match handle(app, caller, value, request, next).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    app: AppState,
    caller: Option<Principal>,
    value: HeaderValue,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = parse_key(&value)?;
    if request.uri().path() == "/v1/sessions" {
        return Err(ApiError::BadRequest(
            "Idempotency-Key is not supported on login: its answer carries a session token, which is never stored".into(),
        ));
    }
    let (parts, body) = request.into_parts();
    let limit = app.config().body_limit;
    let body = to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit })?;
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let fingerprint = Fingerprint {
        method: parts.method.as_str(),
        target,
        headers: FINGERPRINT_HEADERS
            .iter()
            .map(|h| (*h, parts.headers.get(*h).and_then(|v| v.to_str().ok())))
            .collect(),
        body_sha256: hex(&Sha256::digest(&body)),
    };
    let scope = scope(&caller);
    let record = format!("{scope}/{}", hex(&Sha256::digest(key.as_bytes())));
    let identity = {
        let mut h = Sha256::new();
        h.update(record.as_bytes());
        h.update(serde_json::to_vec(&fingerprint).unwrap_or_default());
        hex(&h.finalize())
    };
    let records = app.http_idempotency();
    let ticket = match records.claim(&record, &fingerprint).await {
        Ok(Claim::Completed(stored)) => return replay(stored),
        Ok(Claim::Claimed(ticket)) => ticket,
        Err(IdempotencyError::InProgress { .. }) => {
            let mut r = refused(
                StatusCode::CONFLICT,
                "idempotency_in_progress",
                "a request with this Idempotency-Key is still being processed; retry later".into(),
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Ok(r);
        }
        Err(IdempotencyError::PayloadMismatch { .. }) => {
            return Err(refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request".into(),
            ));
        }
        Err(e) => return Err(ApiError::Store(store_error(e))),
    };
    let mut request = Request::from_parts(parts, Body::from(body));
    request.extensions_mut().insert(IdempotentRequest {
        write_id: identity[..12].to_string(),
        commit_id: format!("http-{}", &identity[..32]),
        publish_id: format!("http-{}", &identity[..32]),
    });
    // Finish before the server's own timeout, so the claim is settled either way.
    let deadline = app.config().request_timeout.mul_f64(0.9);
    let response = match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(r) => r,
        Err(_) => ApiError::Timeout(deadline).into_response(),
    };
    let status = response.status();
    if status.is_server_error() {
        // Unknown or failed: give the claim up; the retry runs again under the same identity.
        if let Err(e) = records.abandon(&record, ticket.claim_id()).await {
            tracing::warn!(error = %e, "could not give up an idempotency claim; it goes stale");
        }
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
    let stored = Stored {
        status: status.as_u16(),
        headers: STORED_HEADERS
            .iter()
            .filter_map(|h| {
                let v = parts.headers.get(h)?.to_str().ok()?;
                Some((h.as_str().to_string(), v.to_string()))
            })
            .collect(),
        body: (bytes.len() <= MAX_STORED_BODY).then(|| BASE64.encode(&bytes)),
    };
    if let Err(e) = records.complete(&record, ticket.claim_id(), &stored).await {
        // The answer stands; a retry after the claim goes stale runs again
        // under the same identity and finds the change.
        tracing::warn!(error = %e, "could not store an idempotent answer");
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

fn store_error<E: std::fmt::Display>(e: IdempotencyError<E>) -> ifmatch::Error {
    match e {
        IdempotencyError::Store { source, .. } => source,
        other => ifmatch::Error::msg(format!("idempotency record: {other}")),
    }
}

/// Rebuilds a stored answer.
fn replay(stored: serde_json::Value) -> Result<Response, ApiError> {
    let stored: Stored = serde_json::from_value(stored)
        .map_err(|e| ApiError::Store(ifmatch::Error::msg(format!("stored answer: {e}"))))?;
    let status = StatusCode::from_u16(stored.status)
        .map_err(|e| ApiError::Store(ifmatch::Error::msg(format!("stored status: {e}"))))?;
    let mut headers = HeaderMap::new();
    for (name, value) in &stored.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    let body = match &stored.body {
        Some(b) => BASE64
            .decode(b)
            .map_err(|e| ApiError::Store(ifmatch::Error::msg(format!("stored body: {e}"))))?,
        None => {
            headers.insert(
                HeaderName::from_static("idempotent-body-omitted"),
                HeaderValue::from_static("true"),
            );
            Vec::new()
        }
    };
    let mut response = (status, body).into_response();
    response.headers_mut().extend(headers);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_patch_and_snapshot_publishes_take_keys() {
        assert!(takes_key(&Method::POST, "/v1/db"));
        assert!(takes_key(&Method::PATCH, "/v1/objects/a/b"));
        assert!(takes_key(&Method::PUT, "/v1/snapshots/quotes"));
        assert!(takes_key(&Method::PUT, "/v1/snapshots/{name}"));
        assert!(!takes_key(&Method::PUT, "/v1/objects/a"));
        assert!(!takes_key(&Method::PUT, "/v1/snapshots/"));
        assert!(!takes_key(&Method::PUT, "/v1/snapshots/q/versions"));
        assert!(!takes_key(&Method::GET, "/v1/snapshots/quotes"));
    }

    #[test]
    fn keys_are_sf_strings_or_bare() {
        let ok = |s: &str| parse_key(&HeaderValue::from_str(s).unwrap()).unwrap();
        assert_eq!(ok("\"8e03978e-40d5\""), "8e03978e-40d5");
        assert_eq!(ok("abc"), "abc");
        for bad in ["\"\"", "\"a", "\"a\"b\"", &"x".repeat(256)] {
            assert!(
                parse_key(&HeaderValue::from_str(bad).unwrap()).is_err(),
                "{bad}"
            );
        }
    }
}

//! Object writes that carry a `Fencing-Token` header: HTTP preconditions and
//! the token, applied by [`ifmatch::fence`].
//!
//! A lease's fencing token ([`crate::routes::leases`]) sent as
//! `Fencing-Token: <token>` on a PUT, DELETE or PATCH of `/v1/objects/{key}`
//! makes the write land only if the key was not written with a newer token,
//! checked and written in one conditional write by the library. A write
//! refused for its token is **409 `fenced`**, naming the key and its current
//! ETag; the preconditions answer as they do without a token (412, 428).
//!
//! This module maps the request's [`Preconditions`] onto the library's
//! precondition check and its errors onto [`ApiError`]; PATCH goes through
//! [`crate::objects::patch`], which takes the token.

use bytes::Bytes;
use http::HeaderMap;
use ifmatch::fence::{self, FencedWriteError};
use ifmatch::lease::FenceError;
use ifmatch::retry::RetryPolicy;
use ifmatch::store::Metadata;
use ifmatch::update::UpdateError;
use ifmatch::{Store, Version};

use crate::error::ApiError;
use crate::objects::Written;
use crate::precondition::{Preconditions, Verdict};

/// The request header that carries a lease's fencing token.
pub const FENCING_TOKEN_HEADER: &str = "fencing-token";

/// The `Fencing-Token` of a request, if any (400 unless a decimal number).
pub fn fencing_token(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(FENCING_TOKEN_HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::BadRequest(
                "Fencing-Token must be a lease's fencing token: a decimal number".into(),
            )
        })
}

/// Whether a fenced write may go ahead at the key's current version:
/// the preconditions hold, and with `require` a write without any may only
/// create the key.
fn allows(pre: &Preconditions, require: bool) -> impl Fn(Option<&Version>) -> bool + '_ {
    move |current| {
        if require && pre.is_empty() {
            current.is_none()
        } else {
            pre.evaluate(current, false) == Verdict::Proceed
        }
    }
}

/// The answer to a fenced write that did not land.
fn refusal(e: FencedWriteError, pre: &Preconditions, require: bool) -> ApiError {
    match e {
        FencedWriteError::Fenced(f) => ApiError::Fenced(f),
        FencedWriteError::Precondition { key, current } => {
            crate::objects::refused(key, current, pre, require)
        }
        FencedWriteError::Fence(FenceError::Conflict { key, .. }) => ApiError::Conflict {
            message: format!(
                "conflict on key '{key}': other writers kept winning until the retry budget ran out"
            ),
            key,
            current: None,
        },
        FencedWriteError::Store(e) => ApiError::from_store(e, !pre.is_empty()),
        other => ApiError::Store(ifmatch::Error::msg(other.to_string())),
    }
}

/// PUT with a fencing token: writes `body` if the preconditions hold and the
/// key was not written with a newer token.
#[allow(clippy::too_many_arguments)]
pub async fn write(
    store: &dyn Store,
    key: &str,
    body: Bytes,
    metadata: Metadata,
    pre: &Preconditions,
    require: bool,
    token: u64,
    policy: &RetryPolicy,
) -> Result<Written, ApiError> {
    let w = fence::put(
        store,
        key,
        body,
        token,
        metadata,
        policy,
        allows(pre, require),
    )
    .await
    .map_err(|e| refusal(e, pre, require))?;
    Ok(Written {
        version: w.version,
        created: w.created,
    })
}

/// DELETE with a fencing token: deletes if the preconditions hold and the
/// key was not written with a newer token (an absent key is fine without
/// preconditions, as without a token).
pub async fn remove(
    store: &dyn Store,
    key: &str,
    pre: &Preconditions,
    require: bool,
    token: u64,
    policy: &RetryPolicy,
) -> Result<(), ApiError> {
    fence::delete(store, key, token, policy, allows(pre, require))
        .await
        .map(drop)
        .map_err(|e| refusal(e, pre, require))
}

/// The answer to a PATCH whose update loop stopped: a write refused for its
/// token is 409 `fenced`, the rest as [`ApiError::from_update`] says.
pub fn from_update(e: UpdateError, precondition: bool) -> ApiError {
    match e {
        UpdateError::Aborted { key, source } => match source.downcast::<FencedWriteError>() {
            Ok(fenced) => refusal(*fenced, &Preconditions::default(), false),
            Err(source) => {
                ApiError::from_update(UpdateError::Aborted { key, source }, precondition)
            }
        },
        other => ApiError::from_update(other, precondition),
    }
}

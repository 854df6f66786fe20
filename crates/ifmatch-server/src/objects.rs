//! Conditional reads and writes of objects: HTTP preconditions applied atomically to a store.
//!
//! Each function takes parsed [`Preconditions`] and turns them into store
//! calls such that the write lands only at a version for which the
//! preconditions hold — never "check, then write unconditionally" (seed
//! 003's race):
//!
//! - the common cases are one conditional store call: no precondition →
//!   `Condition::Any`, `If-Match: "v"` → `Condition::Matches(v)`,
//!   `If-None-Match: *` → `Condition::Absent`;
//! - anything else (a list of tags, `If-Match: *`, both headers) reads the
//!   version, evaluates the preconditions against it, and writes with
//!   `Matches(that version)` (or `Absent`); if another writer got in
//!   between, it evaluates again against the new version (a bounded number of times);
//! - PATCH runs the update loop through an [`Updater`] (concurrent PATCHes
//!   of one key are combined into one write): the closure evaluates the
//!   preconditions against each version it is given and applies the patch,
//!   so with `If-Match` it is strict (412 once the version moved) and without
//!   it the loop re-applies the patch to the newest value until it lands.
//!
//! Per RFC 9110 §13.2.1 preconditions are ignored when the response without
//! them would not be 2xx: a GET, HEAD or PATCH of a missing key is 404 whatever
//! the headers say.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use ifmatch::retry::RetryPolicy;
use ifmatch::store::{Fetch, Metadata};
use ifmatch::update::{Decision, Updater};
use ifmatch::{Condition, Error, Object, ObjectMeta, PutOptions, Store, Version};

use crate::error::{Abort, ApiError};
use crate::patch::Patch;
use crate::precondition::{Preconditions, Verdict};

/// How many times a general precondition is re-evaluated when other writers keep moving the key.
const REEVALUATIONS: usize = 8;

/// The answer to a conditional GET.
#[derive(Debug)]
pub enum Read {
    /// 304: the client's copy is current.
    NotModified(Version),
    /// 200: here is the object.
    Full(Object),
}

/// The answer to a conditional HEAD.
#[derive(Debug)]
pub enum ReadMeta {
    /// 304: the client's copy is current.
    NotModified(Version),
    /// 200: the object's version, size and metadata.
    Full(ObjectMeta),
}

/// What a PUT did.
#[derive(Debug, Clone)]
pub struct Written {
    /// The new version.
    pub version: Version,
    /// True if the key did not exist before.
    pub created: bool,
}

/// What a PATCH did.
#[derive(Debug, Clone)]
pub struct Patched {
    /// The new version.
    pub version: Version,
    /// The new value.
    pub body: Bytes,
    /// The metadata kept with it.
    pub metadata: Metadata,
}

/// The current version of `key`, `None` if absent.
async fn current_version(store: &dyn Store, key: &str) -> Result<Option<Version>, ApiError> {
    match store.head(key).await {
        Ok(meta) => Ok(Some(meta.version)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(ApiError::from_store(e, false)),
    }
}

/// The answer to a write refused at version `current`: **428** when the
/// server requires a precondition and the request sent none (`require`),
/// else **412**; both name the current version. Shared with the fenced
/// writes ([`crate::fenced`]).
pub fn refused(
    key: impl Into<String>,
    current: Option<Version>,
    pre: &Preconditions,
    require: bool,
) -> ApiError {
    let key = key.into();
    if require && pre.is_empty() {
        ApiError::PreconditionRequired { key, current }
    } else {
        ApiError::PreconditionFailed { key, current }
    }
}

/// A 412 naming the current version (looked up when the store's conflict did not report it).
async fn precondition_failed(store: &dyn Store, key: &str, actual: Option<Version>) -> ApiError {
    let current = match actual {
        Some(v) => Some(v),
        None => current_version(store, key).await.ok().flatten(),
    };
    ApiError::PreconditionFailed {
        key: key.to_string(),
        current,
    }
}

/// GET: the object, or 304, or 412, in the order of RFC 9110 §13.2.2.
pub async fn read(store: &dyn Store, key: &str, pre: &Preconditions) -> Result<Read, ApiError> {
    let obj = if let Some(known) = pre.single_if_none_match() {
        // One round trip and no body when the client's copy is current.
        match store.get_if_changed(key, &known).await {
            Ok(Fetch::Unchanged) => return Ok(Read::NotModified(known)),
            Ok(Fetch::Changed(obj)) => obj,
            Err(e) => return Err(ApiError::from_store(e, false)),
        }
    } else {
        store
            .get(key)
            .await
            .map_err(|e| ApiError::from_store(e, false))?
    };
    match pre.evaluate(Some(obj.version()), true) {
        Verdict::Proceed => Ok(Read::Full(unfence(obj)?)),
        Verdict::NotModified => Ok(Read::NotModified(obj.meta.version)),
        Verdict::Failed => Err(ApiError::PreconditionFailed {
            key: key.to_string(),
            current: Some(obj.meta.version),
        }),
    }
}

/// HEAD: like [`read`] without the body.
pub async fn read_meta(
    store: &dyn Store,
    key: &str,
    pre: &Preconditions,
) -> Result<ReadMeta, ApiError> {
    let meta = store
        .head(key)
        .await
        .map_err(|e| ApiError::from_store(e, false))?;
    match pre.evaluate(Some(&meta.version), true) {
        Verdict::Proceed => Ok(ReadMeta::Full(ifmatch::fence::unfenced_meta(meta))),
        Verdict::NotModified => Ok(ReadMeta::NotModified(meta.version)),
        Verdict::Failed => Err(ApiError::PreconditionFailed {
            key: key.to_string(),
            current: Some(meta.version),
        }),
    }
}

/// PUT: writes `body` if the preconditions hold. With `require_precondition`, a write
/// without one may only create the key (428 if it exists).
pub async fn write(
    store: &dyn Store,
    key: &str,
    body: Bytes,
    metadata: Metadata,
    pre: &Preconditions,
    require_precondition: bool,
) -> Result<Written, ApiError> {
    let put = |condition: Condition, body: Bytes| {
        store.put(
            key,
            body,
            PutOptions {
                condition,
                metadata: metadata.clone(),
                expires_at: None,
            },
        )
    };
    match pre.as_condition() {
        Some(Condition::Any) => match put(Condition::Absent, body.clone()).await {
            Ok(version) => Ok(Written {
                version,
                created: true,
            }),
            Err(Error::Conflict { actual, .. }) if require_precondition => {
                Err(refused(key, actual, pre, require_precondition))
            }
            Err(Error::Conflict { .. }) => match put(Condition::Any, body).await {
                Ok(version) => Ok(Written {
                    version,
                    created: false,
                }),
                Err(e) => Err(ApiError::from_store(e, false)),
            },
            Err(e) => Err(ApiError::from_store(e, false)),
        },
        Some(condition) => {
            let created = condition == Condition::Absent;
            match put(condition, body).await {
                Ok(version) => Ok(Written { version, created }),
                Err(Error::Conflict { actual, .. }) => {
                    Err(precondition_failed(store, key, actual).await)
                }
                Err(e) => Err(ApiError::from_store(e, true)),
            }
        }
        None => {
            for _ in 0..REEVALUATIONS {
                let current = current_version(store, key).await?;
                if pre.evaluate(current.as_ref(), false) != Verdict::Proceed {
                    return Err(ApiError::PreconditionFailed {
                        key: key.to_string(),
                        current,
                    });
                }
                let condition = match &current {
                    Some(v) => Condition::Matches(v.clone()),
                    None => Condition::Absent,
                };
                match put(condition, body.clone()).await {
                    Ok(version) => {
                        return Ok(Written {
                            version,
                            created: current.is_none(),
                        });
                    }
                    Err(Error::Conflict { .. }) => continue,
                    Err(e) => return Err(ApiError::from_store(e, true)),
                }
            }
            Err(moving_target(store, key).await)
        }
    }
}

/// The 409 of a key that kept changing while its preconditions were re-evaluated.
async fn moving_target(store: &dyn Store, key: &str) -> ApiError {
    ApiError::Conflict {
        key: key.to_string(),
        current: current_version(store, key).await.ok().flatten(),
        message: format!(
            "conflict on key '{key}': it kept changing while the preconditions were evaluated; retry"
        ),
    }
}

/// DELETE: removes the key if the preconditions hold. Deleting an absent key without
/// preconditions succeeds (deleting is idempotent). With `require_precondition`, a
/// delete without one of an existing key is refused (428).
pub async fn remove(
    store: &dyn Store,
    key: &str,
    pre: &Preconditions,
    require_precondition: bool,
) -> Result<(), ApiError> {
    if pre.is_empty() && require_precondition {
        return match current_version(store, key).await? {
            Some(current) => Err(refused(key, Some(current), pre, require_precondition)),
            None => Ok(()),
        };
    }
    match pre.as_condition() {
        Some(condition) => match store.delete(key, condition).await {
            Ok(()) => Ok(()),
            Err(Error::Conflict { actual, .. }) => {
                Err(precondition_failed(store, key, actual).await)
            }
            Err(e) => Err(ApiError::from_store(e, !pre.is_empty())),
        },
        None => {
            for _ in 0..REEVALUATIONS {
                let current = current_version(store, key).await?;
                if pre.evaluate(current.as_ref(), false) != Verdict::Proceed {
                    return Err(ApiError::PreconditionFailed {
                        key: key.to_string(),
                        current,
                    });
                }
                let Some(v) = current else {
                    return Ok(());
                };
                match store.delete(key, Condition::Matches(v)).await {
                    Ok(()) => return Ok(()),
                    Err(Error::Conflict { .. }) => continue,
                    Err(e) => return Err(ApiError::from_store(e, true)),
                }
            }
            Err(moving_target(store, key).await)
        }
    }
}

/// The user metadata of a stored object, without the entries ifmatch reserves for itself.
pub fn user_metadata(metadata: &Metadata) -> Metadata {
    metadata
        .iter()
        .filter(|(k, _)| !k.starts_with(ifmatch::key::RESERVED_METADATA_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A value as its writer gave it: without the fencing header of a fenced write.
fn unfence(obj: Object) -> Result<Object, ApiError> {
    ifmatch::fence::unfence(obj).map_err(|e| ApiError::Store(Error::msg(e.to_string())))
}

/// `f` applied to the value without its fencing header (what
/// [`ifmatch::fence::update`] does for an unfenced write), for the [`Updater`].
fn unfenced<F>(
    mut f: F,
) -> impl FnMut(Option<&Object>) -> Result<Decision, ifmatch::error::BoxError> + Send + 'static
where
    F: FnMut(Option<&Object>) -> Result<Decision, ifmatch::error::BoxError> + Send + 'static,
{
    move |current| {
        let view = current.cloned().map(ifmatch::fence::unfence).transpose()?;
        f(view.as_ref())
    }
}

/// PATCH: applies `patch` in the update loop (see the module docs), to the
/// value without its fencing header. Without a `token`, through `updater`,
/// so concurrent PATCHes of one key in this process are combined into one
/// conditional write (group commit, [`Updater`]); with a `token`
/// (`Fencing-Token`) the write is fenced ([`ifmatch::fence::update`]) and
/// runs on its own.
///
/// With a `write_id` (from an `Idempotency-Key`), every retry of one request
/// carries the same write id, so a change that already landed is found and
/// not applied again; the answer is then the key's current value.
pub async fn patch(
    updater: &Updater,
    key: &str,
    patch: &Patch,
    pre: &Preconditions,
    policy: &RetryPolicy,
    token: Option<u64>,
    write_id: Option<&str>,
) -> Result<Patched, ApiError> {
    let last: Arc<Mutex<Option<(Bytes, Metadata)>>> = Arc::default();
    let apply = {
        let (patch, pre, last) = (patch.clone(), pre.clone(), last.clone());
        move |current: Option<&ifmatch::Object>| {
            let Some(obj) = current else {
                return Err(Abort::NotFound.into());
            };
            if pre.evaluate(Some(obj.version()), false) != Verdict::Proceed {
                return Err(Abort::Precondition(Some(obj.meta.version.clone())).into());
            }
            let body = patch.apply(&obj.body).map_err(Abort::Patch)?;
            let metadata = user_metadata(&obj.meta.metadata);
            *last.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((body.clone(), metadata.clone()));
            Ok(Decision::Write { body, metadata })
        }
    };
    let store = updater.store().as_ref();
    let result = match (token, write_id) {
        (Some(_), _) => ifmatch::fence::update(store, key, token, write_id, policy, apply).await,
        (None, Some(id)) => updater.update_with_id(key, id, unfenced(apply)).await,
        (None, None) => updater.update(key, unfenced(apply)).await,
    }
    .map_err(|e| crate::fenced::from_update(e, !pre.is_empty()))?;
    if result.replayed {
        // An earlier try of this request landed: answer with the value now.
        let obj = store
            .get(key)
            .await
            .map_err(|e| ApiError::from_store(e, false))
            .and_then(unfence)?;
        return Ok(Patched {
            version: obj.meta.version.clone(),
            metadata: user_metadata(&obj.meta.metadata),
            body: obj.body,
        });
    }
    let last = last.lock().unwrap_or_else(PoisonError::into_inner).take();
    match (result.version, last) {
        (Some(version), Some((body, metadata))) => Ok(Patched {
            version,
            body,
            metadata,
        }),
        _ => Err(ApiError::Store(Error::msg(format!(
            "the update of key '{key}' reported no new version"
        )))),
    }
}

//! Fenced writes with a precondition: the rule behind the HTTP server's
//! `Fencing-Token` header, for PUT, DELETE and PATCH.
//!
//! [`crate::lease::fenced_put`] lets a lease holder write a key unless the
//! key was last written with a newer fencing token. An HTTP client also sends
//! preconditions (`If-Match`, `If-None-Match`) and deletes and patches keys, so
//! this module gives the same guarantee to all three, each combined with a
//! caller's precondition:
//!
//! - [`put`] writes `body` if `precondition(current version)` holds and the
//!   stored token is not newer than ours;
//! - [`delete`] deletes on the same terms;
//! - [`update`] runs the update loop ([`crate::update::update`]) on the
//!   value without its fencing header, refusing to write over a newer token.
//!
//! In each, the check and the write are **one conditional write** on the
//! version read, so two fenced writers can never both pass the check: the
//! loser re-reads and checks again (and a precondition naming the old version
//! then fails). An equal token passes (the same holder writing again).
//!
//! Values are stored in [`crate::lease::fenced_put`]'s format, so the two
//! interoperate: a one-line header with the token and a fresh write id in
//! front of the caller's bytes (so every fenced write moves the version, also
//! on S3 where the version is a hash of the bytes), and the token and write id
//! in metadata ([`META_FENCE`], [`META_FENCE_WID`]) so the check takes a HEAD.
//! Read fenced values with [`unfence`] (or [`crate::lease::fenced_get`]);
//! [`unfenced_meta`] gives the caller's size from a HEAD.
//!
//! A write **without** a token is not checked and stores the value unfenced:
//! fencing protects writers that all send their tokens. A fenced delete
//! removes the key together with its token, so the key's fencing history
//! starts again with the next write.
//!
//! A write whose response was lost is looked for by its write id on the next
//! read; if the budget runs out while one may still land, the answer is
//! [`Error::Ambiguous`], never a retry that could apply it twice.

use bytes::Bytes;

use crate::error::{BoxError, Error};
use crate::lease::{FENCE_HEADER_MAGIC, FenceError, FencedValue, META_FENCE, META_FENCE_WID};
use crate::retry::RetryPolicy;
use crate::store::{Condition, Metadata, Object, ObjectMeta, PutOptions, Store, Version};
use crate::update::{Decision, UpdateError, Updated};

/// A write refused because the key was written with a newer token: the
/// writer's lease is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "fenced write to '{key}' refused: token {token} is older than the token {stored} already used for it"
)]
pub struct Fenced {
    /// The key.
    pub key: String,
    /// The token the write carried.
    pub token: u64,
    /// The newer token stored with the value.
    pub stored: u64,
    /// The key's current version.
    pub current: Version,
}

/// Why a fenced write did not land.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FencedWriteError {
    /// The key was written with a newer token.
    #[error(transparent)]
    Fenced(Fenced),
    /// The caller's precondition does not hold at the key's current version.
    #[error("precondition failed on key '{key}'")]
    Precondition {
        /// The key.
        key: String,
        /// Its current version (`None`: absent).
        current: Option<Version>,
    },
    /// Other writers kept winning until the retry budget ran out
    /// ([`FenceError::Conflict`]), or the stored token or fencing header is
    /// malformed ([`FenceError::Corrupt`]).
    #[error(transparent)]
    Fence(FenceError),
    /// The store failed (non-retryable, retryable beyond the budget, or an
    /// outcome that stayed unknown: [`Error::Ambiguous`]).
    #[error(transparent)]
    Store(#[from] Error),
}

impl FencedWriteError {
    /// The classification, for exit codes and HTTP statuses.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            FencedWriteError::Fenced(_)
            | FencedWriteError::Precondition { .. }
            | FencedWriteError::Fence(FenceError::Conflict { .. }) => crate::ErrorKind::Conflict,
            FencedWriteError::Fence(_) => crate::ErrorKind::Other,
            FencedWriteError::Store(e) => e.kind(),
        }
    }
}

impl From<FenceError> for FencedWriteError {
    fn from(e: FenceError) -> Self {
        match e {
            FenceError::Store(e) => FencedWriteError::Store(e),
            other => FencedWriteError::Fence(other),
        }
    }
}

/// What a fenced [`put`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FencedWrite {
    /// The new version.
    pub version: Version,
    /// True if the key did not exist before.
    pub created: bool,
}

/// The stored bytes of a fenced value: [`crate::lease::fenced_put`]'s header
/// (`ifmatch-fence/1 TOKEN WRITE-ID\n`), then `body`.
fn encode(token: u64, wid: &str, body: &[u8]) -> Bytes {
    let line = format!("{token} {wid}\n");
    let mut out = Vec::with_capacity(FENCE_HEADER_MAGIC.len() + line.len() + body.len());
    out.extend_from_slice(FENCE_HEADER_MAGIC);
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// A fresh write id, as [`crate::lease::fenced_put`] makes them.
fn write_id(policy: &RetryPolicy) -> String {
    format!("{:016x}", policy.rng.next_u64())
}

/// The metadata of a fenced write: `metadata` plus the token and write id.
fn fenced_metadata(mut metadata: Metadata, token: u64, wid: &str) -> Metadata {
    metadata.insert(META_FENCE.into(), token.to_string());
    metadata.insert(META_FENCE_WID.into(), wid.to_string());
    metadata
}

/// The token stored with a value, from its metadata (`None`: written unfenced).
fn stored_token(meta: &ObjectMeta) -> Result<Option<u64>, FencedWriteError> {
    Ok(crate::lease::stored_token(meta)?)
}

/// Refuses a write with `token` over a value stored with a newer one.
fn check_token(meta: &ObjectMeta, token: u64) -> Result<(), FencedWriteError> {
    match stored_token(meta)? {
        Some(stored) if stored > token => Err(FencedWriteError::Fenced(Fenced {
            key: meta.key.clone(),
            token,
            stored,
            current: meta.version.clone(),
        })),
        _ => Ok(()),
    }
}

/// A HEAD, `None` if absent; transient errors retried within `policy`.
async fn head(
    store: &dyn Store,
    key: &str,
    policy: &RetryPolicy,
) -> Result<Option<ObjectMeta>, Error> {
    policy
        .run(|| async {
            match store.head(key).await {
                Ok(m) => Ok(Some(m)),
                Err(Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
}

/// How a fenced loop ends when its budget runs out.
fn give_up(
    key: &str,
    attempts: u32,
    ambiguous: bool,
    transient: Option<Error>,
) -> FencedWriteError {
    if ambiguous {
        return FencedWriteError::Store(Error::Ambiguous {
            key: key.to_string(),
            message: format!(
                "a fenced write's response was lost and it was not found in {attempts} attempts; it may still land"
            ),
        });
    }
    match transient {
        Some(e) => FencedWriteError::Store(e),
        None => FencedWriteError::Fence(FenceError::Conflict {
            key: key.to_string(),
            attempts,
        }),
    }
}

/// What a fenced loop does with the store's answer to its write.
enum Answer<T> {
    /// It landed.
    Done(T),
    /// Try again: a lost race, a lost response (`lost`: the write may land
    /// yet) or a transient error.
    Again {
        lost: bool,
        transient: Option<Error>,
    },
    /// Give up with this error.
    Failed(Error),
}

fn answer<T>(result: Result<T, Error>) -> Answer<T> {
    match result {
        Ok(v) => Answer::Done(v),
        Err(Error::Conflict { .. } | Error::NotFound { .. }) => Answer::Again {
            lost: false,
            transient: None,
        },
        Err(Error::Ambiguous { .. }) => Answer::Again {
            lost: true,
            transient: None,
        },
        Err(e) if e.is_retryable() => Answer::Again {
            lost: false,
            transient: Some(e),
        },
        Err(e) => Answer::Failed(e),
    }
}

/// Writes `body` to `key` for the holder of fencing `token`, if
/// `precondition` holds for the key's current version (`None`: absent) and the
/// value was not last written with a newer token; see the module docs.
///
/// `precondition` is evaluated again after every lost race, so `|v| v ==
/// Some(&expected)` fails (with the new version) once another writer moved
/// the key, while `|_| true` re-tries until the write lands or the budget of
/// `policy` runs out. `metadata` is stored alongside (names starting
/// `ifmatch-` are reserved).
pub async fn put<P>(
    store: &dyn Store,
    key: &str,
    body: Bytes,
    token: u64,
    metadata: Metadata,
    policy: &RetryPolicy,
    precondition: P,
) -> Result<FencedWrite, FencedWriteError>
where
    P: Fn(Option<&Version>) -> bool,
{
    let wid = write_id(policy);
    let stored = encode(token, &wid, &body);
    let metadata = fenced_metadata(metadata, token, &wid);
    let mut attempts = policy.start();
    let mut ambiguous = false;
    let mut created = false;
    loop {
        attempts.begin();
        let current = head(store, key, policy).await?;
        if let Some(meta) = &current
            && meta.metadata.get(META_FENCE_WID) == Some(&wid)
        {
            // An earlier attempt whose answer was lost (or late) landed.
            return Ok(FencedWrite {
                version: meta.version.clone(),
                created,
            });
        }
        if !precondition(current.as_ref().map(|m| &m.version)) {
            return Err(FencedWriteError::Precondition {
                key: key.to_string(),
                current: current.map(|m| m.version),
            });
        }
        let condition = match &current {
            Some(meta) => {
                check_token(meta, token)?;
                Condition::Matches(meta.version.clone())
            }
            None => Condition::Absent,
        };
        created = current.is_none();
        let opts = PutOptions {
            condition,
            metadata: metadata.clone(),
            expires_at: None,
        };
        let transient = match answer(store.put(key, stored.clone(), opts).await) {
            Answer::Done(version) => return Ok(FencedWrite { version, created }),
            Answer::Again { lost, transient } => {
                ambiguous |= lost;
                transient
            }
            Answer::Failed(e) => return Err(e.into()),
        };
        if !attempts.backoff().await {
            // A last look: a lost write may have landed in the meantime.
            if ambiguous
                && let Some(meta) = head(store, key, policy).await?
                && meta.metadata.get(META_FENCE_WID) == Some(&wid)
            {
                return Ok(FencedWrite {
                    version: meta.version,
                    created,
                });
            }
            return Err(give_up(key, attempts.made(), ambiguous, transient));
        }
    }
}

/// Deletes `key` for the holder of fencing `token`, if `precondition` holds
/// for its current version (`None`: absent) and the value was not last
/// written with a newer token. Returns whether a value was deleted (`false`:
/// it was already absent and `precondition(None)` holds).
///
/// The delete is conditional on the version checked; a lost race re-reads
/// and checks again, like [`put`].
pub async fn delete<P>(
    store: &dyn Store,
    key: &str,
    token: u64,
    policy: &RetryPolicy,
    precondition: P,
) -> Result<bool, FencedWriteError>
where
    P: Fn(Option<&Version>) -> bool,
{
    let mut attempts = policy.start();
    let mut ambiguous = false;
    loop {
        attempts.begin();
        let current = head(store, key, policy).await?;
        if ambiguous && current.is_none() {
            // Our delete whose answer was lost landed (or another one did): gone either way.
            return Ok(true);
        }
        if !precondition(current.as_ref().map(|m| &m.version)) {
            return Err(FencedWriteError::Precondition {
                key: key.to_string(),
                current: current.map(|m| m.version),
            });
        }
        let Some(meta) = current else {
            return Ok(false);
        };
        check_token(&meta, token)?;
        let deleted = store
            .delete(key, Condition::Matches(meta.version.clone()))
            .await;
        let transient = match answer(deleted) {
            Answer::Done(()) => return Ok(true),
            Answer::Again { lost, transient } => {
                ambiguous |= lost;
                transient
            }
            Answer::Failed(e) => return Err(e.into()),
        };
        if !attempts.backoff().await {
            if ambiguous && head(store, key, policy).await?.is_none() {
                return Ok(true);
            }
            return Err(give_up(key, attempts.made(), ambiguous, transient));
        }
    }
}

/// The update loop ([`crate::update::update`]) over fenced values.
///
/// `f` gets the current value **without** its fencing header ([`unfence`]),
/// and its [`Decision::Write`] is stored:
///
/// - with `Some(token)`: fenced with `token`, and only over a value whose
///   stored token is not newer (otherwise the update stops with
///   [`UpdateError::Aborted`] whose source is a [`FencedWriteError::Fenced`]);
/// - with `None`: unfenced, unchecked (a plain update that can read fenced values).
///
/// Lost responses, conflicts and retries are the update loop's. With a
/// `change_id` the loop is [`crate::update::update_with_id`]: a change with
/// that id that already landed is not applied again ([`Updated::replayed`]).
pub async fn update<F>(
    store: &dyn Store,
    key: &str,
    token: Option<u64>,
    change_id: Option<&str>,
    policy: &RetryPolicy,
    mut f: F,
) -> Result<Updated, UpdateError>
where
    F: FnMut(Option<&Object>) -> Result<Decision, BoxError>,
{
    let wid = write_id(policy);
    let apply = |current: Option<&Object>| {
        let view = current.cloned().map(unfence).transpose()?;
        if let (Some(token), Some(obj)) = (token, &view) {
            check_token(&obj.meta, token)?;
        }
        Ok(match (f(view.as_ref())?, token) {
            (Decision::Write { body, metadata }, Some(token)) => Decision::Write {
                body: encode(token, &wid, &body),
                metadata: fenced_metadata(metadata, token, &wid),
            },
            (decision, _) => decision,
        })
    };
    match change_id {
        Some(id) => crate::update::update_with_id(store, key, policy, id, apply).await,
        None => crate::update::update(store, key, policy, apply).await,
    }
}

/// An object as its writer gave it: a value written with a fencing token
/// loses its fencing header (its size is then the caller's bytes); any other
/// value is returned as it is.
///
/// Only values whose metadata names a fenced write ([`META_FENCE_WID`]) are
/// decoded, so an unfenced value that happens to start like a fencing header
/// is left alone.
pub fn unfence(object: Object) -> Result<Object, FencedWriteError> {
    if !object.meta.metadata.contains_key(META_FENCE_WID) {
        return Ok(object);
    }
    let FencedValue { body, mut meta, .. } = FencedValue::decode(object)?;
    meta.size = body.len() as u64;
    Ok(Object { meta, body })
}

/// The metadata of a value as [`unfence`] would report it, from a HEAD: the
/// size without the fencing header of a fenced value.
pub fn unfenced_meta(mut meta: ObjectMeta) -> ObjectMeta {
    if let (Some(token), Some(wid)) = (
        meta.metadata.get(META_FENCE),
        meta.metadata.get(META_FENCE_WID),
    ) {
        // The header: the magic, the token, a space, the write id, a newline.
        let header = FENCE_HEADER_MAGIC.len() + token.len() + 1 + wid.len() + 1;
        meta.size = meta.size.saturating_sub(header as u64);
    }
    meta
}

//! The update loop: read, apply a closure, write conditionally, retry on conflict.
//!
//! [`update`] reads a key, calls your closure with the current value, and
//! writes the result with `If-Match` (or `If-None-Match: *` when the key was
//! absent). If another writer got there first, it re-reads and re-applies the
//! closure — so **the closure may run more than once** and must be a pure
//! function of its input. When the retry budget is spent it returns
//! [`UpdateError::Conflict`], naming the attempts made.
//!
//! ## Never lost, never applied twice
//!
//! Every update gets one random **write id**, carried by each of its writes
//! in the value's metadata (`ifmatch-wid`), with the ids of the writes before
//! it (`ifmatch-hist`: up to the last [`HISTORY`], as many as the user's own
//! metadata leaves room for, never fewer than [`MIN_HISTORY`]) and a count
//! of changes since the key was created (`ifmatch-seq`). A combined write of
//! an [`Updater`] (group commit, below) carries the ids of all its changes,
//! comma-separated and in order, and counts each of them.
//!
//! An answer can fail to say whether a write landed: `Ambiguous` (the answer
//! was lost, or the request may still be on its way and land later), or a
//! `Conflict` that is really the answer to a *duplicated* delivery of our own
//! write that already landed. Such a write is settled from the key's state,
//! and only from evidence that cannot change later:
//!
//! - our id (for a combined write: the run of its ids) is in the history:
//!   it landed; done, without re-applying;
//! - the write we conditioned on is followed by another id: ours can never
//!   land (only one write can follow a version, and versions never repeat);
//!   re-apply on the new value;
//! - the key is still at the version we conditioned on: ours may still be on
//!   its way, so **the identical write is sent again** (same id, same
//!   condition): at most one copy can land, and its answer, or the next read,
//!   decides;
//! - the history cannot tell (more writes since than it keeps, a writer
//!   outside the loop, a delete): [`UpdateError::Ambiguous`], never a guess.
//!
//! A brownout that fails the read-back too is waited out within the retry
//! budget; when the budget ends undecided the result is
//! [`UpdateError::Ambiguous`]. Because an update keeps one id across its
//! attempts, [`update_with_id`] lets a caller give a *retried request* the
//! same id (say, from an `Idempotency-Key`) and get exactly-once across
//! calls and processes.
//!
//! Residual risks, not covered: a plain `Conflict` whose duplicated delivery
//! landed and whose evidence was erased before our read-back (more writes
//! than the history keeps, or a delete) is taken as a conflict; on stores
//! whose versions can repeat (S3's ETags are body hashes), a late write can
//! land again if the key returns to byte-identical content while it is on
//! its way; a late create (`If-None-Match: *`) can land after the key is
//! deleted again.
//!
//! ## Group commit
//!
//! One key cannot take more conditional writes per second than the store
//! lands one after another. An [`Updater`] (module `group`) lifts that limit
//! within one process: while a write for a key is in flight, later updates
//! of that key through the same `Updater` queue in an in-process map of
//! key → queue; the next write reads once, applies every queued closure in
//! order and lands them all with one conditional write, each caller getting
//! its own result. A conflict re-applies the whole batch; a closure that
//! fails fails only its own caller; a batch takes only as many changes as
//! the metadata budget holds beside [`MIN_HISTORY`] earlier ids (at most
//! [`MAX_BATCH`]), the rest wait for the next write. The free functions
//! here ([`update`], [`update_json`], ...) do not batch.
//!
//! ## Observability
//!
//! Through the `metrics` facade: `ifmatch_update_attempts_total`,
//! `ifmatch_update_conflicts_total`, `ifmatch_update_ambiguous_resolved_total`
//! and `ifmatch_update_failures_total{reason}`; conflicts and lost responses
//! are also logged at `debug` level through `tracing`.

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use crate::clock::SharedRng;
use crate::error::{BoxError, Error};
use crate::retry::{Attempts, RetryPolicy};
use crate::store::{Condition, Metadata, Object, ObjectMeta, PutOptions, Store, Version};

mod group;
mod lineage;

pub use group::{MAX_BATCH, Updater};
use lineage::{Landed, Lineage, judge};

/// How many earlier write ids a value carries in its metadata.
pub const HISTORY: usize = 64;

/// The fewest earlier write ids the loop keeps: user metadata may take only
/// what leaves room for them (see [`crate::key::MAX_METADATA_BYTES`]).
pub const MIN_HISTORY: usize = 8;

/// The longest write id a caller may choose ([`update_with_id`]).
pub const MAX_WRITE_ID_LEN: usize = 32;

/// Metadata name of the write id.
pub const META_WRITE_ID: &str = "ifmatch-wid";
/// Metadata name of the earlier write ids (comma-separated, oldest first).
pub const META_HISTORY: &str = "ifmatch-hist";
/// Metadata name of the count of loop writes since the key was created.
pub const META_SEQ: &str = "ifmatch-seq";

/// What the closure wants done with the key.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Write this value (the metadata is replaced by `metadata` plus the loop's own entries).
    Write {
        /// The new value.
        body: Bytes,
        /// User metadata to store with it.
        metadata: Metadata,
    },
    /// Delete the key.
    Delete,
    /// Leave the key as it is; nothing is written.
    Keep,
}

impl Decision {
    /// A write of `body` with no user metadata.
    pub fn write(body: impl Into<Bytes>) -> Self {
        Decision::Write {
            body: body.into(),
            metadata: Metadata::new(),
        }
    }
}

/// What an update did.
#[derive(Debug, Clone)]
pub struct Updated {
    /// The version after the update (`None` if the key is now absent).
    pub version: Option<Version>,
    /// Whether anything was written (false for [`Decision::Keep`]).
    pub changed: bool,
    /// Attempts made, the first included.
    pub attempts: u32,
    /// Conflicts met on the way.
    pub conflicts: u32,
    /// Lost responses resolved on the way.
    pub ambiguous_resolved: u32,
    /// The change had already landed in an earlier call with the same write
    /// id ([`update_with_id`]); the closure did not run.
    pub replayed: bool,
}

/// Why an update failed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// Other writers kept winning until the budget ran out.
    #[error("conflict on key '{key}': gave up after {attempts} attempts ({conflicts} conflicts)")]
    Conflict {
        /// The key.
        key: String,
        /// Attempts made.
        attempts: u32,
        /// Conflicts among them.
        conflicts: u32,
        /// The last conflict the store reported.
        #[source]
        last: Error,
    },
    /// A write's outcome is unknown and the key's history cannot settle it.
    #[error(
        "outcome unknown for key '{key}': a write's response was lost and the key has changed too much since to tell whether it landed"
    )]
    Ambiguous {
        /// The key.
        key: String,
    },
    /// The closure refused to go on.
    #[error("update of key '{key}' aborted: {source}")]
    Aborted {
        /// The key.
        key: String,
        /// The closure's error.
        source: BoxError,
    },
    /// The store failed (non-retryable, or retryable beyond the budget).
    #[error(transparent)]
    Store(#[from] Error),
}

impl UpdateError {
    /// The classification, for exit codes and HTTP statuses.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            UpdateError::Conflict { .. } => crate::ErrorKind::Conflict,
            UpdateError::Ambiguous { .. } => crate::ErrorKind::Ambiguous,
            UpdateError::Aborted { .. } => crate::ErrorKind::Other,
            UpdateError::Store(e) => e.kind(),
        }
    }
}

/// How a write of the loop ended, once settled.
enum Settled {
    /// It landed; the version now (and the object, when read back).
    Landed(Option<Version>, Option<Object>),
    /// It did not land and never will; the key as read afterwards.
    Lost(Option<Object>),
    /// It did not land (a transient refusal before any send could land).
    Refused(Error),
    /// Its outcome could not be settled within the budget.
    Unknown,
}

/// Sends one write of the loop and settles its outcome.
///
/// An answer that does not settle it — `Ambiguous` (lost or not received:
/// the write may still land later), or a `Conflict` that may be a
/// duplicated delivery of our own landed write — is settled from the key's
/// state: our write id there means it landed; another write after our base
/// means it never will; the key still at our base means it may be on its
/// way, and then **the identical write is sent again** (same id, same
/// condition): at most one of the copies can land, and the next answer or
/// read decides. A transient refusal after an unsettled send keeps settling
/// the same way; without one it is [`Settled::Refused`] and the caller
/// re-reads and re-applies (nothing landed).
#[allow(clippy::too_many_arguments)]
async fn settle_put(
    store: &dyn Store,
    key: &str,
    body: Bytes,
    opts: PutOptions,
    base: &Lineage,
    base_version: Option<&Version>,
    wids: &[String],
    policy: &RetryPolicy,
    attempts: &mut Attempts<'_>,
) -> Result<Settled, UpdateError> {
    // Whether a send of this write may have landed without our knowing.
    let mut unsettled = false;
    loop {
        let answer = store.put(key, body.clone(), opts.clone()).await;
        let ambiguous = matches!(answer, Err(Error::Ambiguous { .. }));
        match answer {
            Ok(v) => return Ok(Settled::Landed(Some(v), None)),
            Err(Error::Conflict { .. } | Error::NotFound { .. } | Error::Ambiguous { .. }) => {
                unsettled |= ambiguous;
                let now = match read(store, key, policy).await {
                    Ok(now) => now,
                    Err(e) if !e.is_retryable() => return Err(e.into()),
                    // The read-back failed too (a brownout): send again if the budget allows.
                    Err(_) => {
                        unsettled = true;
                        if attempts.backoff().await {
                            attempts.begin();
                            continue;
                        }
                        return Ok(Settled::Unknown);
                    }
                };
                let landed = judge(base, base_version, wids, now.as_ref());
                tracing::debug!(key, write_ids = ?wids, ?landed, ambiguous, "settling a write");
                match landed {
                    Landed::Yes => {
                        if unsettled {
                            metrics::counter!("ifmatch_update_ambiguous_resolved_total")
                                .increment(1);
                        }
                        let v = now.as_ref().map(|o| o.meta.version.clone());
                        return Ok(Settled::Landed(v, now));
                    }
                    Landed::No => return Ok(Settled::Lost(now)),
                    // A plain conflict whose history cannot tell: as every
                    // conflict, it did not land (a duplicated delivery whose
                    // evidence was erased before our read is the documented residue).
                    Landed::Unknown if !unsettled => return Ok(Settled::Lost(now)),
                    Landed::Unknown => return Ok(Settled::Unknown),
                    Landed::Pending => {
                        unsettled = true;
                        if attempts.backoff().await {
                            attempts.begin();
                            continue;
                        }
                        return Ok(Settled::Unknown);
                    }
                }
            }
            Err(e) if e.is_retryable() => {
                if !unsettled {
                    return Ok(Settled::Refused(e));
                }
                if attempts.backoff().await {
                    attempts.begin();
                    continue;
                }
                return Ok(Settled::Unknown);
            }
            Err(_) if unsettled => return Ok(Settled::Unknown),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads `key`, applies `f`, writes conditionally, and retries on conflict within `policy`.
///
/// `f` gets the current object (`None` if absent) and returns a [`Decision`],
/// or an error to abort. It may run several times. Retryable store errors
/// are retried within the same budget.
pub async fn update<F>(
    store: &dyn Store,
    key: &str,
    policy: &RetryPolicy,
    f: F,
) -> Result<Updated, UpdateError>
where
    F: FnMut(Option<&Object>) -> Result<Decision, BoxError>,
{
    let wid = write_id(&policy.rng);
    update_inner(store, key, policy, None, None, single(key, wid, f))
        .await
        .map(|(u, _)| u)
}

/// The closure of a single update as the loop runs it: its decision carries its one write id.
fn single<F>(
    key: &str,
    wid: String,
    mut f: F,
) -> impl FnMut(Option<&Object>) -> Result<(Decision, Vec<String>), UpdateError>
where
    F: FnMut(Option<&Object>) -> Result<Decision, BoxError>,
{
    let ids = vec![wid];
    move |cur| {
        let decision = f(cur).map_err(|source| UpdateError::Aborted {
            key: key.to_string(),
            source,
        })?;
        Ok((decision, ids.clone()))
    }
}

/// [`update`] with a write id chosen by the caller instead of a random one.
///
/// Use it to make a *retried request* exactly-once across calls and
/// processes: give every retry of one logical change the same id (derived,
/// say, from an `Idempotency-Key`). If a change with this id already landed
/// and is still in the key's history (the last [`HISTORY`] writes, less when
/// large user metadata leaves less room), the call returns at once with
/// [`Updated::replayed`] set and `f` does not run. If an earlier call's write
/// may still be on its way, the new call's write (same id) and the earlier
/// one can land at most once between them, provided `f` computes the same
/// change from the same value.
///
/// The id is 1–32 characters of ASCII letters, digits, `-` and `_`. Ids must
/// be unique per logical change: reusing one for a different change makes it
/// look applied.
pub async fn update_with_id<F>(
    store: &dyn Store,
    key: &str,
    policy: &RetryPolicy,
    write_id: &str,
    f: F,
) -> Result<Updated, UpdateError>
where
    F: FnMut(Option<&Object>) -> Result<Decision, BoxError>,
{
    check_write_id(write_id)?;
    update_inner(
        store,
        key,
        policy,
        Some(write_id),
        None,
        single(key, write_id.to_string(), f),
    )
    .await
    .map(|(u, _)| u)
}

fn check_write_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= MAX_WRITE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "a write id is 1-{MAX_WRITE_ID_LEN} characters of ASCII letters, digits, '-' and '_', not {id:?}"
        )))
    }
}

/// The loop itself; also returns the key as it stands after the call, when
/// known: the object our write created (or the one in which it was found,
/// when the outcome was settled by reading the key), the object left as it
/// was, or, for a replay, the object holding the earlier write.
///
/// `f` returns the decision and the ids of the changes a write carries
/// (one for an update, several for a combined write of an [`Updater`]).
/// With `replay`, a key whose history already holds that id is a replay.
/// With `start`, the loop begins from that object instead of reading the
/// key: an object this process saw land, which the conditional write checks
/// like any read (if the key moved since, the write conflicts and the loop
/// re-reads).
async fn update_inner<F>(
    store: &dyn Store,
    key: &str,
    policy: &RetryPolicy,
    replay: Option<&str>,
    start: Option<Object>,
    mut f: F,
) -> Result<(Updated, Option<Object>), UpdateError>
where
    F: FnMut(Option<&Object>) -> Result<(Decision, Vec<String>), UpdateError>,
{
    let mut attempts = policy.start();
    let mut conflicts = 0u32;
    let mut ambiguous_resolved = 0u32;
    let mut current = match start {
        Some(o) => Some(o),
        None => read(store, key, policy).await?,
    };
    if replay.is_some_and(|wid| Lineage::of(current.as_ref()).contains(wid)) {
        // An earlier call with this write id landed: nothing to do again.
        let version = current.as_ref().map(|o| o.meta.version.clone());
        let updated = Updated {
            version,
            changed: true,
            attempts: 0,
            conflicts,
            ambiguous_resolved,
            replayed: true,
        };
        return Ok((updated, current));
    }
    loop {
        attempts.begin();
        metrics::counter!("ifmatch_update_attempts_total").increment(1);
        let (decision, wids) = f(current.as_ref())?;
        let condition = match &current {
            Some(o) => Condition::Matches(o.meta.version.clone()),
            None => Condition::Absent,
        };
        let base = Lineage::of(current.as_ref());
        let done = |version, attempts: &Attempts<'_>, conflicts, ambiguous_resolved| Updated {
            version,
            changed: true,
            attempts: attempts.made(),
            conflicts,
            ambiguous_resolved,
            replayed: false,
        };
        match decision {
            Decision::Keep => {
                let mut u = done(
                    current.as_ref().map(|o| o.meta.version.clone()),
                    &attempts,
                    conflicts,
                    ambiguous_resolved,
                );
                u.changed = false;
                return Ok((u, current));
            }
            Decision::Write { body, mut metadata } => {
                base.next(key, &wids, &mut metadata)?;
                let written = (body.clone(), metadata.clone());
                let opts = PutOptions {
                    condition,
                    metadata,
                    expires_at: None,
                };
                let base_version = current.as_ref().map(|o| o.meta.version.clone());
                let settled = settle_put(
                    store,
                    key,
                    body,
                    opts,
                    &base,
                    base_version.as_ref(),
                    &wids,
                    policy,
                    &mut attempts,
                )
                .await?;
                match settled {
                    Settled::Landed(version, seen) => {
                        if seen.is_some() {
                            ambiguous_resolved += 1;
                        }
                        let after = match (seen, &version) {
                            (Some(o), _) => Some(o),
                            (None, Some(v)) => {
                                let (body, metadata) = written;
                                Some(Object {
                                    meta: ObjectMeta {
                                        key: key.to_string(),
                                        version: v.clone(),
                                        size: body.len() as u64,
                                        metadata,
                                        expires_at: None,
                                    },
                                    body,
                                })
                            }
                            (None, None) => None,
                        };
                        let u = done(version, &attempts, conflicts, ambiguous_resolved);
                        return Ok((u, after));
                    }
                    Settled::Lost(now) => {
                        conflicts += 1;
                        metrics::counter!("ifmatch_update_conflicts_total").increment(1);
                        tracing::debug!(
                            key,
                            attempt = attempts.made(),
                            "update lost a race; re-applying"
                        );
                        if !attempts.backoff().await {
                            metrics::counter!("ifmatch_update_failures_total", "reason" => "conflict")
                                .increment(1);
                            return Err(UpdateError::Conflict {
                                key: key.to_string(),
                                attempts: attempts.made(),
                                conflicts,
                                last: Error::conflict(
                                    key,
                                    Condition::Any,
                                    now.map(|o| o.meta.version),
                                ),
                            });
                        }
                        // The key as read after the conflict is the next base;
                        // re-read only if the backoff was long enough to matter.
                        current = read(store, key, policy).await?;
                    }
                    Settled::Refused(e) => {
                        if !attempts.backoff().await {
                            return Err(UpdateError::Store(crate::retry::exhausted(
                                e,
                                attempts.made(),
                            )));
                        }
                        current = read(store, key, policy).await?;
                    }
                    Settled::Unknown => {
                        metrics::counter!("ifmatch_update_failures_total", "reason" => "ambiguous")
                            .increment(1);
                        return Err(UpdateError::Ambiguous {
                            key: key.to_string(),
                        });
                    }
                }
            }
            Decision::Delete => {
                if current.is_none() {
                    let mut u = done(None, &attempts, conflicts, ambiguous_resolved);
                    u.changed = false;
                    return Ok((u, None));
                }
                match store.delete(key, condition).await {
                    Ok(()) => {
                        return Ok((done(None, &attempts, conflicts, ambiguous_resolved), None));
                    }
                    Err(Error::Ambiguous { .. }) => {
                        // Deleting is idempotent in effect: re-read and decide again.
                        ambiguous_resolved += 1;
                        current = read(store, key, policy).await?;
                        if current.is_none() {
                            let u = done(None, &attempts, conflicts, ambiguous_resolved);
                            return Ok((u, None));
                        }
                        if !attempts.backoff().await {
                            return Err(UpdateError::Ambiguous {
                                key: key.to_string(),
                            });
                        }
                    }
                    Err(e @ (Error::Conflict { .. } | Error::NotFound { .. })) => {
                        conflicts += 1;
                        metrics::counter!("ifmatch_update_conflicts_total").increment(1);
                        if !attempts.backoff().await {
                            return Err(UpdateError::Conflict {
                                key: key.to_string(),
                                attempts: attempts.made(),
                                conflicts,
                                last: e,
                            });
                        }
                        current = read(store, key, policy).await?;
                    }
                    Err(e) if e.is_retryable() => {
                        if !attempts.backoff().await {
                            return Err(UpdateError::Store(crate::retry::exhausted(
                                e,
                                attempts.made(),
                            )));
                        }
                        current = read(store, key, policy).await?;
                    }
                    Err(e) => return Err(UpdateError::Store(e)),
                }
            }
        }
    }
}

/// Reads a key, `None` when absent, retrying transient errors within `policy`.
async fn read(store: &dyn Store, key: &str, policy: &RetryPolicy) -> Result<Option<Object>, Error> {
    policy
        .run(|| async {
            match store.get(key).await {
                Ok(o) => Ok(Some(o)),
                Err(Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
}

/// A random 48-bit write id in 12 hex digits: short enough that [`HISTORY`]
/// of them fit in S3's 2 KB of metadata with room to spare, long enough that
/// two ids in one history collide with odds below one in 10^11.
///
/// The bits come from the policy's generator mixed with a process-wide
/// counter, so that policies seeded alike (tests, simulations) still give
/// every update its own id.
fn write_id(rng: &SharedRng) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static UPDATES: AtomicU64 = AtomicU64::new(0);
    let n = UPDATES.fetch_add(1, Ordering::Relaxed);
    let mut x = rng.next_u64() ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // splitmix64's finaliser: every input bit moves about half of the output bits.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    format!("{:012x}", x & 0xffff_ffff_ffff)
}

/// The result of [`update_json`]: the value written (or kept) and the update's bookkeeping.
#[derive(Debug, Clone)]
pub struct UpdatedJson<T> {
    /// The value now stored (`None` if the key is absent).
    pub value: Option<T>,
    /// What the update did.
    pub updated: Updated,
}

/// A typed JSON update: `f` maps the current value (`None` if absent) to the
/// new one (`None` to delete). Returning the same value still writes; use
/// [`update`] with [`Decision::Keep`] to skip no-op writes.
pub async fn update_json<T, F>(
    store: &dyn Store,
    key: &str,
    policy: &RetryPolicy,
    f: F,
) -> Result<UpdatedJson<T>, UpdateError>
where
    T: Serialize + DeserializeOwned,
    F: FnMut(Option<T>) -> Result<Option<T>, BoxError>,
{
    let last = JsonSlot::default();
    let r = update(store, key, policy, json_step(key, f, last.clone())).await;
    json_result(key, r.map(|u| (u, None)), &last)
}

/// [`update_json`] with a caller-chosen write id; see [`update_with_id`].
/// On a replay the value returned is the key's value as read when the
/// earlier write was found (it may include later writes of others).
pub async fn update_json_with_id<T, F>(
    store: &dyn Store,
    key: &str,
    policy: &RetryPolicy,
    write_id: &str,
    f: F,
) -> Result<UpdatedJson<T>, UpdateError>
where
    T: Serialize + DeserializeOwned,
    F: FnMut(Option<T>) -> Result<Option<T>, BoxError>,
{
    check_write_id(write_id)?;
    let last = JsonSlot::default();
    let step = single(key, write_id.to_string(), json_step(key, f, last.clone()));
    let r = update_inner(store, key, policy, Some(write_id), None, step).await;
    json_result(key, r, &last)
}

/// Where a JSON update's closure leaves the last value it returned.
type JsonSlot<T> = std::sync::Arc<std::sync::Mutex<Option<T>>>;

fn parse_json<T: DeserializeOwned>(key: &str, o: &Object) -> Result<T, BoxError> {
    serde_json::from_slice(&o.body).map_err(|e| {
        BoxError::from(format!(
            "stored value of '{key}' is not the expected JSON: {e}"
        ))
    })
}

/// The closure of a JSON update as the loop runs it: parses, applies `f`,
/// serialises, and leaves `f`'s answer in `last`.
fn json_step<T, F>(
    key: &str,
    mut f: F,
    last: JsonSlot<T>,
) -> impl FnMut(Option<&Object>) -> Result<Decision, BoxError> + use<T, F>
where
    T: Serialize + DeserializeOwned,
    F: FnMut(Option<T>) -> Result<Option<T>, BoxError>,
{
    let key = key.to_string();
    move |cur| {
        let parsed: Option<T> = cur.map(|o| parse_json(&key, o)).transpose()?;
        let next = f(parsed)?;
        let decision = match &next {
            Some(v) => Decision::write(serde_json::to_vec(v)?),
            None => Decision::Delete,
        };
        *last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        Ok(decision)
    }
}

/// The answer of a JSON update from the loop's: the value `f` last
/// returned, or on a replay (`f` did not run) the stored value in which our
/// write was found.
fn json_result<T: DeserializeOwned>(
    key: &str,
    r: Result<(Updated, Option<Object>), UpdateError>,
    last: &JsonSlot<T>,
) -> Result<UpdatedJson<T>, UpdateError> {
    let (updated, seen) = r?;
    let value = if updated.replayed {
        seen.as_ref()
            .map(|o| parse_json(key, o))
            .transpose()
            .map_err(|source| UpdateError::Aborted {
                key: key.to_string(),
                source,
            })?
    } else {
        last.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    };
    Ok(UpdatedJson { value, updated })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::clock::ManualClock;
    use crate::store::fault::{FaultConfig, FaultStore};
    use crate::store::memory::MemoryStore;
    use crate::store::{DynStore, Fetch, ListPage, ListResult, ObjectMeta};

    fn policy() -> RetryPolicy {
        RetryPolicy::default()
            .with_clock(Arc::new(ManualClock::new(std::time::UNIX_EPOCH)))
            .with_rng(SharedRng::seeded(5))
            .with_max_attempts(5)
    }

    async fn counter(store: &dyn Store) -> u64 {
        serde_json::from_slice(&store.get("n").await.unwrap().body).unwrap()
    }

    async fn incr(store: &dyn Store) -> Result<UpdatedJson<u64>, UpdateError> {
        update_json(store, "n", &policy(), |n: Option<u64>| {
            Ok(Some(n.unwrap_or(0) + 1))
        })
        .await
    }

    fn always_lose(inner: DynStore) -> FaultStore {
        FaultStore::new(
            inner,
            FaultConfig {
                lost_response_rate: 1.0,
                ..FaultConfig::default()
            },
            SharedRng::seeded(1),
        )
    }

    #[tokio::test]
    async fn a_lost_response_is_resolved_without_applying_twice() {
        let inner: DynStore = Arc::new(MemoryStore::new());
        let store = always_lose(inner.clone());
        // The create's response is lost: the loop finds its write id and stops.
        let r = incr(&store).await.unwrap();
        assert_eq!(r.value, Some(1));
        assert_eq!(r.updated.ambiguous_resolved, 1);
        assert_eq!(r.updated.attempts, 1);
        // The update's response is lost too.
        let r = incr(&store).await.unwrap();
        assert_eq!(r.value, Some(2));
        assert_eq!(counter(&*inner).await, 2);
    }

    #[tokio::test]
    async fn write_ids_chain_through_metadata() {
        let store = MemoryStore::new();
        for _ in 0..(HISTORY + 5) {
            incr(&store).await.unwrap();
        }
        let o = store.get("n").await.unwrap();
        let hist = o.meta.metadata.get(META_HISTORY).unwrap();
        assert_eq!(hist.split(',').count(), HISTORY - 1);
        assert_eq!(
            o.meta.metadata.get(META_SEQ).unwrap(),
            &(HISTORY + 5).to_string()
        );
        assert_eq!(o.meta.metadata.get(META_WRITE_ID).unwrap().len(), 12);
    }

    /// Lets a put land, then lets a writer outside the loop overwrite it, then loses the response.
    #[derive(Debug)]
    struct OverwrittenBehindOurBack(MemoryStore);

    #[async_trait]
    impl Store for OverwrittenBehindOurBack {
        fn describe(&self) -> String {
            "test".into()
        }
        async fn get(&self, key: &str) -> crate::Result<Object> {
            self.0.get(key).await
        }
        async fn get_if_changed(&self, key: &str, v: &Version) -> crate::Result<Fetch> {
            self.0.get_if_changed(key, v).await
        }
        async fn head(&self, key: &str) -> crate::Result<ObjectMeta> {
            self.0.head(key).await
        }
        async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> crate::Result<Version> {
            self.0.put(key, body, opts).await?;
            self.0.put(key, "99".into(), PutOptions::any()).await?;
            Err(Error::Ambiguous {
                key: key.into(),
                message: "lost".into(),
            })
        }
        async fn delete(&self, key: &str, c: Condition) -> crate::Result<()> {
            self.0.delete(key, c).await
        }
        async fn list(&self, p: &str, page: ListPage) -> crate::Result<ListResult> {
            self.0.list(p, page).await
        }
    }

    #[tokio::test]
    async fn an_undecidable_lost_response_is_reported_not_guessed() {
        let store = OverwrittenBehindOurBack(MemoryStore::new());
        let err = incr(&store).await.unwrap_err();
        assert!(matches!(err, UpdateError::Ambiguous { .. }), "{err}");
        assert_eq!(err.kind(), crate::ErrorKind::Ambiguous);
    }

    #[tokio::test]
    async fn conflicts_until_the_budget_is_spent() {
        let store = MemoryStore::new();
        store.put("n", "0".into(), PutOptions::any()).await.unwrap();
        let calls = AtomicU32::new(0);
        // Every time the closure runs, another writer gets in first.
        let err = update(&store, "n", &policy(), |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            let other = store.put("n", "x".into(), PutOptions::any());
            futures::executor::block_on(other).unwrap();
            Ok(Decision::write("mine"))
        })
        .await
        .unwrap_err();
        match err {
            UpdateError::Conflict {
                attempts,
                conflicts,
                ..
            } => {
                assert_eq!(attempts, 5);
                assert_eq!(conflicts, 5);
            }
            other => panic!("{other}"),
        }
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        assert!(err_message_names_attempts().contains("5 attempts"));
    }

    fn err_message_names_attempts() -> String {
        UpdateError::Conflict {
            key: "n".into(),
            attempts: 5,
            conflicts: 5,
            last: Error::conflict("n", Condition::Any, None),
        }
        .to_string()
    }

    #[tokio::test]
    async fn keep_writes_nothing_and_abort_rolls_nothing() {
        let store = MemoryStore::new();
        let v = store.put("n", "7".into(), PutOptions::any()).await.unwrap();
        let r = update(&store, "n", &policy(), |_| Ok(Decision::Keep))
            .await
            .unwrap();
        assert!(!r.changed);
        assert_eq!(r.version, Some(v.clone()));
        let err = update(&store, "n", &policy(), |_| Err("no thanks".into()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no thanks"), "{err}");
        assert_eq!(store.head("n").await.unwrap().version, v);
    }

    #[tokio::test]
    async fn delete_through_the_loop_even_with_a_lost_response() {
        let inner: DynStore = Arc::new(MemoryStore::new());
        inner.put("n", "1".into(), PutOptions::any()).await.unwrap();
        let store = always_lose(inner.clone());
        let r = update(&store, "n", &policy(), |_| Ok(Decision::Delete))
            .await
            .unwrap();
        assert!(r.changed);
        assert_eq!(r.version, None);
        assert!(inner.get("n").await.is_err());
        // Deleting an absent key changes nothing.
        let r = update(inner.as_ref(), "n", &policy(), |_| Ok(Decision::Delete))
            .await
            .unwrap();
        assert!(!r.changed);
    }

    #[tokio::test]
    async fn unavailable_store_gives_up_within_the_budget() {
        let store = FaultStore::new(
            Arc::new(MemoryStore::new()),
            FaultConfig {
                error_rate: 1.0,
                ..FaultConfig::default()
            },
            SharedRng::seeded(2),
        );
        let err = incr(&store).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Unavailable);
        assert!(err.to_string().contains("gave up after"), "{err}");
    }

    /// A retry policy on tokio's (paused) clock, so that late deliveries,
    /// which wait on the same clock, can land during a backoff.
    fn tokio_policy() -> RetryPolicy {
        RetryPolicy::default()
            .with_clock(crate::clock::SystemClock::shared())
            .with_rng(SharedRng::seeded(5))
            .with_max_attempts(8)
            .with_delays(Duration::from_millis(2), Duration::from_millis(20))
    }

    async fn incr_with(
        store: &dyn Store,
        policy: &RetryPolicy,
    ) -> Result<UpdatedJson<u64>, UpdateError> {
        update_json(store, "n", policy, |n: Option<u64>| {
            Ok(Some(n.unwrap_or(0) + 1))
        })
        .await
    }

    fn faulty(inner: DynStore, config: FaultConfig) -> FaultStore {
        FaultStore::new(inner, config, SharedRng::seeded(3))
    }

    // Failed before the fix: every conflict re-applied the closure, so each
    // duplicated delivery (our write lands, its copy answers 412) added one more.
    #[tokio::test(start_paused = true)]
    async fn a_conflict_that_answers_our_own_duplicated_write_is_not_applied_again() {
        let inner: DynStore = Arc::new(MemoryStore::new());
        let store = faulty(
            inner.clone(),
            FaultConfig {
                duplicate_rate: 1.0,
                ..FaultConfig::default()
            },
        );
        for n in 1..=3 {
            let r = incr_with(&store, &tokio_policy()).await.unwrap();
            assert_eq!(r.value, Some(n));
            assert_eq!(counter(&*inner).await, n);
        }
    }

    // Failed before the fix: a write reported lost but still on its way was
    // judged "did not land" while the key was still at its base, the closure
    // ran again, and the late write landed too (the counter went up by 2).
    #[tokio::test(start_paused = true)]
    async fn a_late_write_that_lands_after_the_read_back_is_not_applied_twice() {
        let inner: DynStore = Arc::new(MemoryStore::new());
        let store = faulty(
            inner.clone(),
            FaultConfig {
                late_rate: 1.0,
                late_delay: (Duration::from_millis(1), Duration::from_millis(1)),
                ..FaultConfig::default()
            },
        );
        for n in 1..=3 {
            let r = incr_with(&store, &tokio_policy()).await;
            store.settle().await;
            // Every copy is late: the loop settles it by re-sending the same
            // write and finding its id once a copy has landed.
            assert_eq!(r.unwrap().value, Some(n));
            assert_eq!(counter(&*inner).await, n);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_brownout_after_a_lost_answer_is_waited_out_not_guessed() {
        let inner: DynStore = Arc::new(MemoryStore::new());
        let store = faulty(
            inner.clone(),
            FaultConfig {
                lost_response_rate: 1.0,
                burst_rate: 1.0,
                burst_len: (3, 3),
                ..FaultConfig::default()
            },
        );
        let r = incr_with(&store, &tokio_policy().with_max_attempts(10))
            .await
            .unwrap();
        assert_eq!(r.value, Some(1));
        assert_eq!(counter(&*inner).await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unsettled_write_is_reported_ambiguous_and_lands_at_most_once() {
        let inner: DynStore = Arc::new(MemoryStore::new());
        // Every send is late and every read-back fails: nothing can be learnt.
        let store = faulty(
            inner.clone(),
            FaultConfig {
                late_rate: 1.0,
                late_delay: (Duration::from_secs(60), Duration::from_secs(60)),
                burst_rate: 1.0,
                burst_len: (1000, 1000),
                ..FaultConfig::default()
            },
        );
        let err = incr_with(&store, &tokio_policy()).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Ambiguous, "{err}");
        store.settle().await;
        assert_eq!(counter(&*inner).await, 1, "the copies landed exactly once");
    }

    #[tokio::test]
    async fn the_same_write_id_applies_once_across_calls() {
        let store = MemoryStore::new();
        let mut runs = 0;
        for _ in 0..3 {
            let r = update_json_with_id(&store, "n", &policy(), "req-7", |n: Option<u64>| {
                runs += 1;
                Ok(Some(n.unwrap_or(0) + 1))
            })
            .await
            .unwrap();
            assert_eq!(r.value, Some(1));
        }
        assert_eq!(runs, 1);
        assert_eq!(counter(&store).await, 1);
        // Another id is another change.
        let r = update_json_with_id(&store, "n", &policy(), "req-8", |n: Option<u64>| {
            Ok(Some(n.unwrap_or(0) + 1))
        })
        .await
        .unwrap();
        assert!(!r.updated.replayed);
        assert_eq!(r.value, Some(2));
        for bad in ["", "a,b", &"x".repeat(MAX_WRITE_ID_LEN + 1)] {
            let e = update_with_id(&store, "n", &policy(), bad, |_| Ok(Decision::Keep))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Invalid, "{bad:?}");
        }
    }

    // Failed before the fix: the loop's history (about 870 bytes) counted
    // against the 2,000-byte metadata limit on top of the user's, so a value
    // with 1.2 KB of user metadata failed after a few dozen updates.
    #[tokio::test]
    async fn user_metadata_and_the_loop_history_share_the_limit() {
        let store = MemoryStore::new();
        let mut md = Metadata::new();
        md.insert("note".into(), "x".repeat(1200));
        for _ in 0..100 {
            update(&store, "m", &policy(), |cur| {
                let n: u64 = cur
                    .map(|o| serde_json::from_slice(&o.body).unwrap())
                    .unwrap_or(0);
                Ok(Decision::Write {
                    body: serde_json::to_vec(&(n + 1)).unwrap().into(),
                    metadata: md.clone(),
                })
            })
            .await
            .unwrap();
        }
        let o = store.get("m").await.unwrap();
        let hist = o.meta.metadata.get(META_HISTORY).unwrap();
        let kept = hist.split(',').count();
        assert!((MIN_HISTORY..HISTORY).contains(&kept), "{kept}");
        assert_eq!(o.meta.metadata.get(META_SEQ).unwrap(), "100");
        // User metadata that leaves no room for the bookkeeping is refused up front.
        md.insert("note".into(), "x".repeat(1900));
        let e = update(&store, "m", &policy(), |_| {
            Ok(Decision::Write {
                body: "1".into(),
                metadata: md.clone(),
            })
        })
        .await
        .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Invalid);
        assert!(e.to_string().contains("keep user metadata under"), "{e}");
    }
}

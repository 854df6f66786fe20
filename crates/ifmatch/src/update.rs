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
//! Every write stamps a fresh random write id into the value's metadata
//! (`ifmatch-wid`), with the ids of the writes before it (`ifmatch-hist`, the
//! last [`HISTORY`]) and a count of writes since the key was created
//! (`ifmatch-seq`). If a write's response is lost ([`Error::Ambiguous`]), the
//! loop re-reads the key and decides from that history:
//!
//! - our id is in the history: the write landed; done, without re-applying;
//! - the write we conditioned on is in the history and followed by another
//!   id: ours cannot have landed (only one write can follow a version); re-apply;
//! - the history cannot tell (more than [`HISTORY`] writes since, or a writer
//!   outside the loop): return [`UpdateError::Ambiguous`] rather than guess.
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
use crate::retry::RetryPolicy;
use crate::store::{Condition, Metadata, Object, PutOptions, Store, Version};

/// How many earlier write ids a value carries in its metadata.
pub const HISTORY: usize = 64;

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

/// The loop's bookkeeping carried in metadata.
#[derive(Debug, Clone, Default)]
struct Lineage {
    /// The ids of loop writes, oldest first, the current value's own last.
    ids: Vec<String>,
    /// Loop writes since creation; the history is complete when `seq <= ids.len()`.
    seq: u64,
}

impl Lineage {
    fn of(obj: Option<&Object>) -> Lineage {
        let Some(obj) = obj else {
            return Lineage::default();
        };
        let md = &obj.meta.metadata;
        let Some(wid) = md.get(META_WRITE_ID) else {
            // Written outside the loop: no usable history.
            return Lineage {
                ids: Vec::new(),
                seq: u64::MAX,
            };
        };
        let mut ids: Vec<String> = md
            .get(META_HISTORY)
            .map(|h| {
                h.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        ids.push(wid.clone());
        let seq = md
            .get(META_SEQ)
            .and_then(|s| s.parse().ok())
            .unwrap_or(u64::MAX);
        Lineage { ids, seq }
    }

    fn current(&self) -> Option<&str> {
        self.ids.last().map(String::as_str)
    }

    fn complete(&self) -> bool {
        self.seq != u64::MAX && self.seq as usize <= self.ids.len()
    }

    /// The metadata entries of the write `wid` that follows this lineage.
    fn next(&self, wid: &str, metadata: &mut Metadata) {
        let keep = self.ids.len().saturating_sub(HISTORY - 1);
        let hist = self.ids[keep..].join(",");
        metadata.insert(META_WRITE_ID.into(), wid.into());
        metadata.insert(META_HISTORY.into(), hist);
        let seq = if self.seq == u64::MAX {
            u64::MAX
        } else {
            self.seq + 1
        };
        metadata.insert(
            META_SEQ.into(),
            if seq == u64::MAX {
                "?".into()
            } else {
                seq.to_string()
            },
        );
    }
}

/// Whether a lost write landed, judged from the key's state afterwards.
#[derive(Debug, PartialEq, Eq)]
enum Landed {
    Yes,
    No,
    Unknown,
}

fn judge(base: &Lineage, wid: &str, now: Option<&Object>) -> Landed {
    let after = Lineage::of(now);
    if after.ids.iter().any(|id| id == wid) {
        return Landed::Yes;
    }
    match base.current() {
        // We conditioned on a loop write: if it is still in the history, its
        // successor (if any) is the only write that could follow it.
        Some(prev) => match after.ids.iter().position(|id| id == prev) {
            Some(_) if now.is_some() => Landed::No,
            _ => Landed::Unknown,
        },
        // We created the key: a complete history without our id says no.
        None if base.seq == 0 => {
            if now.is_none() || !after.complete() {
                Landed::Unknown
            } else {
                Landed::No
            }
        }
        // We conditioned on a value written outside the loop.
        None => Landed::Unknown,
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
    mut f: F,
) -> Result<Updated, UpdateError>
where
    F: FnMut(Option<&Object>) -> Result<Decision, BoxError>,
{
    let mut attempts = policy.start();
    let mut conflicts = 0u32;
    let mut ambiguous_resolved = 0u32;
    let mut current = read(store, key, policy).await?;
    loop {
        attempts.begin();
        metrics::counter!("ifmatch_update_attempts_total").increment(1);
        let decision = f(current.as_ref()).map_err(|source| UpdateError::Aborted {
            key: key.to_string(),
            source,
        })?;
        let condition = match &current {
            Some(o) => Condition::Matches(o.meta.version.clone()),
            None => Condition::Absent,
        };
        let base = Lineage::of(current.as_ref());
        let result = match decision {
            Decision::Keep => {
                return Ok(Updated {
                    version: current.map(|o| o.meta.version),
                    changed: false,
                    attempts: attempts.made(),
                    conflicts,
                    ambiguous_resolved,
                });
            }
            Decision::Write { body, mut metadata } => {
                let wid = write_id(&policy.rng);
                base.next(&wid, &mut metadata);
                let opts = PutOptions {
                    condition,
                    metadata,
                    expires_at: None,
                };
                match store.put(key, body, opts).await {
                    Ok(v) => Ok(Some(v)),
                    Err(Error::Ambiguous { .. }) => {
                        // The write may have landed: look before trying again.
                        let now = read(store, key, policy).await?;
                        let landed = judge(&base, &wid, now.as_ref());
                        tracing::debug!(key, write_id = %wid, ?landed, "resolved a lost response");
                        if landed != Landed::Unknown {
                            metrics::counter!("ifmatch_update_ambiguous_resolved_total")
                                .increment(1);
                        } else {
                            metrics::counter!("ifmatch_update_failures_total", "reason" => "ambiguous")
                                .increment(1);
                        }
                        match landed {
                            Landed::Yes => {
                                ambiguous_resolved += 1;
                                let v = now.map(|o| o.meta.version);
                                return Ok(Updated {
                                    version: v,
                                    changed: true,
                                    attempts: attempts.made(),
                                    conflicts,
                                    ambiguous_resolved,
                                });
                            }
                            Landed::No => {
                                // Another write got in first: a conflict. Back off,
                                // then re-read, so the next attempt's base is fresh
                                // (a stale base would make the next lost response
                                // undecidable).
                                ambiguous_resolved += 1;
                                conflicts += 1;
                                if attempts.backoff().await {
                                    current = read(store, key, policy).await?;
                                    continue;
                                }
                                return Err(UpdateError::Conflict {
                                    key: key.to_string(),
                                    attempts: attempts.made(),
                                    conflicts,
                                    last: Error::conflict(key, Condition::Any, None),
                                });
                            }
                            Landed::Unknown => {
                                return Err(UpdateError::Ambiguous {
                                    key: key.to_string(),
                                });
                            }
                        }
                    }
                    Err(e) => Err(e),
                }
            }
            Decision::Delete => {
                if current.is_none() {
                    return Ok(Updated {
                        version: None,
                        changed: false,
                        attempts: attempts.made(),
                        conflicts,
                        ambiguous_resolved,
                    });
                }
                match store.delete(key, condition).await {
                    Ok(()) => Ok(None),
                    Err(Error::Ambiguous { .. }) => {
                        // Deleting is idempotent in effect: re-read and decide again.
                        ambiguous_resolved += 1;
                        current = read(store, key, policy).await?;
                        if current.is_none() {
                            return Ok(Updated {
                                version: None,
                                changed: true,
                                attempts: attempts.made(),
                                conflicts,
                                ambiguous_resolved,
                            });
                        }
                        if attempts.backoff().await {
                            continue;
                        }
                        return Err(UpdateError::Ambiguous {
                            key: key.to_string(),
                        });
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(version) => {
                return Ok(Updated {
                    version,
                    changed: true,
                    attempts: attempts.made(),
                    conflicts,
                    ambiguous_resolved,
                });
            }
            Err(e @ (Error::Conflict { .. } | Error::NotFound { .. })) => {
                conflicts += 1;
                metrics::counter!("ifmatch_update_conflicts_total").increment(1);
                tracing::debug!(
                    key,
                    attempt = attempts.made(),
                    "update lost a race; re-reading"
                );
                if !attempts.backoff().await {
                    metrics::counter!("ifmatch_update_failures_total", "reason" => "conflict")
                        .increment(1);
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
fn write_id(rng: &SharedRng) -> String {
    format!("{:012x}", rng.next_u64() & 0xffff_ffff_ffff)
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
    mut f: F,
) -> Result<UpdatedJson<T>, UpdateError>
where
    T: Serialize + DeserializeOwned,
    F: FnMut(Option<T>) -> Result<Option<T>, BoxError>,
{
    let mut last: Option<T> = None;
    let updated = update(store, key, policy, |cur| {
        let parsed: Option<T> = match cur {
            Some(o) => Some(serde_json::from_slice(&o.body).map_err(|e| {
                BoxError::from(format!(
                    "stored value of '{key}' is not the expected JSON: {e}"
                ))
            })?),
            None => None,
        };
        let next = f(parsed)?;
        let decision = match &next {
            Some(v) => Decision::write(serde_json::to_vec(v)?),
            None => Decision::Delete,
        };
        last = next;
        Ok(decision)
    })
    .await?;
    Ok(UpdatedJson {
        value: last,
        updated,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

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
}

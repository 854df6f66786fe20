//! Idempotency: run a handler once per key, however often a message is delivered.
//!
//! [`Idempotency::run`] is for queue consumers and API handlers that may see
//! the same request more than once (SQS delivers at least once; clients
//! retry). The first caller **claims** the key with a create-if-absent write
//! (an `in_progress` record with a hash of the payload), runs the handler and
//! stores its result (`completed`), with a write conditional on its own
//! claim's version. Every later caller with the same key gets the stored
//! result without running the handler.
//!
//! - A concurrent duplicate (the claim is still in progress) gets
//!   [`IdempotencyError::InProgress`], or, with [`Idempotency::with_wait`],
//!   polls (with jitter, on the injected clock) until the result is stored.
//! - The same key with a different payload is [`IdempotencyError::PayloadMismatch`].
//! - A handler failure deletes the claim (conditionally) so a retry can run.
//! - A claim older than the in-progress timeout (10 minutes by default: its
//!   worker probably died) is taken over with a write conditional on the
//!   stale claim's version, so of two workers taking it over one wins.
//! - Completed records expire (after an hour by default) and then count as
//!   absent; they are replaced with a conditional write, never overwritten
//!   blindly. Every record carries its expiry as the store's `expires_at`, so
//!   DynamoDB TTL removes them.
//! - An optional bounded in-process cache ([`Idempotency::with_cache`]) answers
//!   repeated duplicates without a read.
//!
//! If the handler panics or its process dies, the claim stays until the
//! in-progress timeout: keep that timeout well above the handler's longest run.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use ifmatch::idempotency::{Idempotency, Outcome};
//!
//! let store = ifmatch::store::open("memory://").await?;
//! let idem = Idempotency::new(store);
//! let msg = serde_json::json!({"request_id": "r-1", "url": "https://example.com"});
//! let take = || async { Ok::<_, std::io::Error>("s3://shots/r-1.png".to_string()) };
//! // The first delivery runs the handler; a redelivery gets the stored result.
//! assert!(matches!(idem.run("r-1", &msg, take).await, Ok(Outcome::Executed(_))));
//! let again = idem.run("r-1", &msg, take).await.unwrap();
//! assert_eq!(again, Outcome::Duplicate("s3://shots/r-1.png".to_string()));
//! # Ok::<(), ifmatch::Error>(()) }).unwrap();
//! ```
//!
//! ## Results
//!
//! Results are any `T: Serialize + DeserializeOwned`, stored as JSON inside the
//! record (for bytes, use a `Vec<u8>` or a base64 string). Payloads are hashed
//! (SHA-256) over a canonical JSON form with object keys sorted, so maps with
//! different iteration orders hash alike.
//!
//! ## Record format
//!
//! The record at `idempotency/KEY` (prefix configurable) is JSON:
//! `{"key", "status": "in_progress" | "completed", "payload_hash", "claim_id",
//! "claimed_at_ms", "updated_at_ms", "expires_at_ms", "result"}`.
//!
//! ## Lost responses
//!
//! Every claim carries a fresh claim id. When a write's response is lost, the
//! record is read again: our claim id there means our write landed.
//!
//! Unlike the seed's consumer (read, then write in two steps), only the
//! conditional writes decide anything here; reads only choose which write to try.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::clock::{DynClock, SharedRng};
use crate::error::Error;
use crate::lease::{from_ms, to_ms};
use crate::retry::RetryPolicy;
use crate::store::{Condition, DynStore, Metadata, PutOptions, Version};

mod cache;
mod error;
mod record;

use cache::Cache;
pub use error::IdempotencyError;
use record::Record;
pub use record::{RecordInfo, RecordState, payload_hash};

/// The default key prefix of idempotency records.
pub const DEFAULT_PREFIX: &str = "idempotency/";

/// What [`Idempotency::run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    /// This call ran the handler; here is its result (now stored).
    Executed(T),
    /// An earlier call ran the handler; here is the result it stored.
    Duplicate(T),
}

impl<T> Outcome<T> {
    /// The result, whoever produced it.
    pub fn value(&self) -> &T {
        match self {
            Outcome::Executed(v) | Outcome::Duplicate(v) => v,
        }
    }
    /// The result, whoever produced it.
    pub fn into_value(self) -> T {
        match self {
            Outcome::Executed(v) | Outcome::Duplicate(v) => v,
        }
    }
    /// True if the stored result of an earlier call was returned.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Outcome::Duplicate(_))
    }
}

/// What [`Idempotency::claim`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The key is now claimed by this caller: do the work, then complete or abandon.
    Claimed(ClaimTicket),
    /// An earlier claim completed; here is its stored result.
    Completed(Value),
}

/// A claim held by the caller of [`Idempotency::claim`]. Its claim id is the
/// proof of the claim that [`Idempotency::complete`] and [`Idempotency::abandon`] ask for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimTicket {
    key: String,
    claim_id: String,
    expires_at: SystemTime,
    version: Version,
}

impl ClaimTicket {
    /// The idempotency key.
    pub fn key(&self) -> &str {
        &self.key
    }
    /// The claim id (random, unique per claim): keep it to complete or abandon.
    pub fn claim_id(&self) -> &str {
        &self.claim_id
    }
    /// When the claim goes stale and another caller may take it over.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
    /// The version of the claim's record.
    pub fn version(&self) -> &Version {
        &self.version
    }
}

fn not_claimed<E>(key: &str, claim_id: &str, rec: &Record) -> IdempotencyError<E> {
    let found = if rec.claim_id == claim_id {
        format!("this claim already {}", rec.status)
    } else {
        format!("{} by another claim", rec.status)
    };
    IdempotencyError::NotClaimed {
        key: key.to_string(),
        claim_id: claim_id.to_string(),
        found,
    }
}
/// Idempotent execution over one store; cheap to clone (clones share the cache).
#[derive(Debug, Clone)]
pub struct Idempotency {
    store: DynStore,
    prefix: String,
    in_progress_timeout: Duration,
    completed_ttl: Duration,
    wait: Duration,
    poll: Duration,
    retry: RetryPolicy,
    cache: Arc<Mutex<Cache>>,
}

impl Idempotency {
    /// Records under `idempotency/` in `store`; 10 minute in-progress timeout,
    /// 1 hour result expiry, no waiting for concurrent duplicates, no cache.
    pub fn new(store: DynStore) -> Self {
        Idempotency {
            store,
            prefix: DEFAULT_PREFIX.to_string(),
            in_progress_timeout: Duration::from_secs(600),
            completed_ttl: Duration::from_secs(3600),
            wait: Duration::ZERO,
            poll: Duration::from_millis(200),
            retry: RetryPolicy::default(),
            cache: Arc::default(),
        }
    }
    /// Keeps records under `prefix`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
    /// How old an in-progress claim must be before another worker may take it over.
    pub fn with_in_progress_timeout(mut self, timeout: Duration) -> Self {
        self.in_progress_timeout = timeout;
        self
    }
    /// How long a completed result is kept (and returned to duplicates).
    pub fn with_completed_ttl(mut self, ttl: Duration) -> Self {
        self.completed_ttl = ttl;
        self
    }
    /// Lets a concurrent duplicate wait up to `wait` for the result, reading
    /// the record about every `poll` (jittered between half and all of it).
    pub fn with_wait(mut self, wait: Duration, poll: Duration) -> Self {
        self.wait = wait;
        self.poll = poll.max(Duration::from_millis(1));
        self
    }
    /// Keeps up to `capacity` completed results in process (0 turns the cache off).
    pub fn with_cache(self, capacity: usize) -> Self {
        let cache = Cache {
            capacity,
            ..Cache::default()
        };
        Idempotency {
            cache: Arc::new(Mutex::new(cache)),
            ..self
        }
    }
    /// The retry policy for transient store errors; its clock and generator are used throughout.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }
    /// Sets the clock (also the retry policy's).
    pub fn with_clock(mut self, clock: DynClock) -> Self {
        self.retry.clock = clock;
        self
    }
    /// Sets the random generator (also the retry policy's).
    pub fn with_rng(mut self, rng: SharedRng) -> Self {
        self.retry.rng = rng;
        self
    }
    /// The key of the record for idempotency key `key`.
    pub fn record_key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn now_ms(&self) -> u64 {
        to_ms(self.retry.clock.now())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // Every cache mutation leaves it consistent, so a poisoned lock is usable.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn read<E>(&self, key: &str) -> Result<Option<(Record, Version)>, IdempotencyError<E>> {
        let rkey = self.record_key(key);
        let got = self
            .retry
            .run(|| async {
                match self.store.get(&rkey).await {
                    Ok(o) => Ok(Some(o)),
                    Err(Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await
            .map_err(|source| IdempotencyError::Store {
                key: key.to_string(),
                source,
            })?;
        match got {
            None => Ok(None),
            Some(o) => {
                let rec: Record =
                    serde_json::from_slice(&o.body).map_err(|e| IdempotencyError::Corrupt {
                        key: key.to_string(),
                        message: format!("record at '{rkey}' is not an idempotency record: {e}"),
                    })?;
                Ok(Some((rec, o.meta.version)))
            }
        }
    }

    async fn write(&self, rec: &Record, condition: Condition) -> Result<Version, Error> {
        let body = serde_json::to_vec(rec).map_err(|e| Error::other("cannot encode record", e))?;
        let opts = PutOptions {
            condition,
            metadata: Metadata::new(),
            expires_at: Some(rec.expires_at_ms.div_ceil(1000)),
        };
        self.store
            .put(&self.record_key(&rec.key), Bytes::from(body), opts)
            .await
    }

    /// Reads what the record of `key` says, without claiming or changing
    /// anything (`None` if there is no record). A record past its expiry is
    /// still reported as stored: [`RecordInfo::expires_at`] tells.
    pub async fn inspect(
        &self,
        key: &str,
    ) -> Result<Option<RecordInfo>, IdempotencyError<std::convert::Infallible>> {
        crate::key::validate_key(&self.record_key(key))
            .map_err(|e| IdempotencyError::Invalid(e.to_string()))?;
        Ok(self.read(key).await?.map(|(rec, version)| RecordInfo {
            key: key.to_string(),
            state: rec.status,
            payload_hash: rec.payload_hash,
            claimed_at: from_ms(rec.claimed_at_ms),
            updated_at: from_ms(rec.updated_at_ms),
            expires_at: from_ms(rec.expires_at_ms),
            result: rec.result,
            version,
        }))
    }

    fn expired(&self, rec: &Record, now_ms: u64) -> bool {
        now_ms >= rec.expires_at_ms
    }

    /// Runs `handler` once for `key`: see the module docs.
    ///
    /// `payload` is the request the key stands for; its hash is stored with
    /// the claim so a reuse of the key for another payload is caught.
    ///
    /// It is [`Idempotency::claim`], the handler, then [`Idempotency::complete`]
    /// (or [`Idempotency::abandon`] if the handler fails), in one call.
    pub async fn run<P, T, E, F, Fut>(
        &self,
        key: &str,
        payload: &P,
        handler: F,
    ) -> Result<Outcome<T>, IdempotencyError<E>>
    where
        P: Serialize + ?Sized,
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let decode = |v: Value| {
            serde_json::from_value::<T>(v).map_err(|e| IdempotencyError::Corrupt {
                key: key.to_string(),
                message: format!("stored result is not of the expected type: {e}"),
            })
        };
        let claim = match self.claim_step(key, payload).await? {
            Step::Held(claim) => claim,
            Step::Done(result) => return Ok(Outcome::Duplicate(decode(result)?)),
        };
        match handler().await {
            Ok(value) => {
                let result = match serde_json::to_value(&value) {
                    Ok(v) => v,
                    Err(e) => {
                        self.release(key, claim).await;
                        return Err(IdempotencyError::Corrupt {
                            key: key.to_string(),
                            message: format!("cannot encode the handler's result: {e}"),
                        });
                    }
                };
                match self.store_result(key, claim, result).await {
                    Ok(()) => Ok(Outcome::Executed(value)),
                    Err((result, reason)) => Err(IdempotencyError::NotSaved {
                        key: key.to_string(),
                        result,
                        reason,
                    }),
                }
            }
            Err(source) => {
                let released = self.release(key, claim).await;
                Err(IdempotencyError::Handler {
                    key: key.to_string(),
                    released,
                    source,
                })
            }
        }
    }

    /// Claims `key` for `payload` without running anything: the lower-level
    /// half of [`Idempotency::run`], for callers that do the work elsewhere
    /// (an HTTP client between two requests, another process).
    ///
    /// - [`Claim::Claimed`]: the key is ours (a new claim, or a stale or
    ///   expired record taken over); do the work, then
    ///   [`Idempotency::complete`] with the ticket's claim id — or
    ///   [`Idempotency::abandon`] so a retry can claim it again.
    /// - [`Claim::Completed`]: an earlier claim stored this result.
    /// - [`IdempotencyError::InProgress`] (after any configured wait) and
    ///   [`IdempotencyError::PayloadMismatch`] as for `run`.
    pub async fn claim<P>(
        &self,
        key: &str,
        payload: &P,
    ) -> Result<Claim, IdempotencyError<std::convert::Infallible>>
    where
        P: Serialize + ?Sized,
    {
        Ok(match self.claim_step(key, payload).await? {
            Step::Held(ClaimHeld { version, rec }) => Claim::Claimed(ClaimTicket {
                key: rec.key,
                claim_id: rec.claim_id,
                expires_at: from_ms(rec.expires_at_ms),
                version,
            }),
            Step::Done(result) => Claim::Completed(result),
        })
    }

    /// Stores `result` as the outcome of the claim `claim_id` on `key`, with a
    /// write conditional on that claim's record; later claims get it.
    ///
    /// Completing a claim that this claim id already completed is `Ok` (the
    /// first result stays). [`IdempotencyError::NotClaimed`] if the record is
    /// gone or belongs to another claim (ours went stale and was taken over);
    /// [`IdempotencyError::NotSaved`] if the store kept failing.
    pub async fn complete<T>(
        &self,
        key: &str,
        claim_id: &str,
        result: &T,
    ) -> Result<(), IdempotencyError<std::convert::Infallible>>
    where
        T: Serialize + ?Sized,
    {
        let result = serde_json::to_value(result).map_err(|e| IdempotencyError::Corrupt {
            key: key.to_string(),
            message: format!("cannot encode the result: {e}"),
        })?;
        let claim = match self.own_claim(key, claim_id).await? {
            Some(claim) => claim,
            None => return Ok(()),
        };
        self.store_result(key, claim, result)
            .await
            .map_err(|(result, reason)| IdempotencyError::NotSaved {
                key: key.to_string(),
                result,
                reason,
            })
    }

    /// Gives up the claim `claim_id` on `key` (deletes its in-progress record
    /// conditionally), so the next claim runs the work.
    ///
    /// No record at all is `Ok` (nothing to give up). A record of another
    /// claim, or one this claim already completed, is [`IdempotencyError::NotClaimed`].
    pub async fn abandon(
        &self,
        key: &str,
        claim_id: &str,
    ) -> Result<(), IdempotencyError<std::convert::Infallible>> {
        crate::key::validate_key(&self.record_key(key))
            .map_err(|e| IdempotencyError::Invalid(e.to_string()))?;
        let Some((rec, version)) = self.read(key).await? else {
            return Ok(());
        };
        if rec.claim_id != claim_id || rec.status != RecordState::InProgress {
            return Err(not_claimed(key, claim_id, &rec));
        }
        if self.release(key, ClaimHeld { version, rec }).await {
            Ok(())
        } else {
            Err(IdempotencyError::Store {
                key: key.to_string(),
                source: Error::Unavailable {
                    message:
                        "could not delete the claim; it goes stale after the in-progress timeout"
                            .into(),
                    source: None,
                },
            })
        }
    }

    /// The in-progress claim `claim_id` on `key` as held; `None` if that claim already completed.
    async fn own_claim(
        &self,
        key: &str,
        claim_id: &str,
    ) -> Result<Option<ClaimHeld>, IdempotencyError<std::convert::Infallible>> {
        crate::key::validate_key(&self.record_key(key))
            .map_err(|e| IdempotencyError::Invalid(e.to_string()))?;
        match self.read(key).await? {
            Some((rec, _)) if rec.claim_id == claim_id && rec.status == RecordState::Completed => {
                Ok(None)
            }
            Some((rec, version)) if rec.claim_id == claim_id => {
                Ok(Some(ClaimHeld { version, rec }))
            }
            Some((rec, _)) => Err(not_claimed(key, claim_id, &rec)),
            None => Err(IdempotencyError::NotClaimed {
                key: key.to_string(),
                claim_id: claim_id.to_string(),
                found: "no record (the claim was abandoned, or expired and was removed)".into(),
            }),
        }
    }

    /// Claims `key` for `payload` (see [`Idempotency::claim`]), for any error type.
    async fn claim_step<P, E>(&self, key: &str, payload: &P) -> Result<Step, IdempotencyError<E>>
    where
        P: Serialize + ?Sized,
    {
        crate::key::validate_key(&self.record_key(key))
            .map_err(|e| IdempotencyError::Invalid(e.to_string()))?;
        let hash = payload_hash(payload).map_err(|e| IdempotencyError::Corrupt {
            key: key.to_string(),
            message: format!("cannot encode the payload: {e}"),
        })?;
        let cached = self.cache().get(key, self.now_ms());
        if let Some((stored, result)) = cached {
            if stored != hash {
                return Err(IdempotencyError::PayloadMismatch {
                    key: key.to_string(),
                    state: RecordState::Completed,
                    stored,
                    given: hash,
                });
            }
            return Ok(Step::Done(result));
        }
        let claim_id = format!(
            "{:016x}{:016x}",
            self.retry.rng.next_u64(),
            self.retry.rng.next_u64()
        );
        let started = self.retry.clock.now();
        let mut failures = 0u32;
        let claim = loop {
            let current = self.read(key).await?;
            let now_ms = self.now_ms();
            let condition = match current {
                None => Condition::Absent,
                Some((rec, version)) => {
                    if rec.claim_id == claim_id && rec.status == RecordState::InProgress {
                        // Our claim, whose response was lost, landed.
                        break ClaimHeld { version, rec };
                    }
                    if self.expired(&rec, now_ms) {
                        if rec.status == RecordState::InProgress {
                            tracing::warn!(
                                key,
                                age_ms = now_ms.saturating_sub(rec.claimed_at_ms),
                                "idempotency claim is stale; taking it over"
                            );
                        }
                        Condition::Matches(version)
                    } else if rec.payload_hash != hash {
                        return Err(IdempotencyError::PayloadMismatch {
                            key: key.to_string(),
                            state: rec.status,
                            stored: rec.payload_hash,
                            given: hash,
                        });
                    } else if rec.status == RecordState::Completed {
                        let result = rec.result.unwrap_or(Value::Null);
                        self.cache().put(key, &hash, &result, rec.expires_at_ms);
                        return Ok(Step::Done(result));
                    } else {
                        let waited = self
                            .retry
                            .clock
                            .now()
                            .duration_since(started)
                            .unwrap_or_default();
                        if waited >= self.wait {
                            return Err(IdempotencyError::InProgress {
                                key: key.to_string(),
                                age: Duration::from_millis(
                                    now_ms.saturating_sub(rec.claimed_at_ms),
                                ),
                                timeout: self.in_progress_timeout,
                                waited,
                            });
                        }
                        let poll_ms = self.poll.as_millis().max(1) as u64;
                        let nap = Duration::from_millis(
                            poll_ms / 2 + self.retry.rng.up_to(poll_ms - poll_ms / 2),
                        )
                        .min(self.wait - waited)
                        .min(Duration::from_millis(
                            rec.expires_at_ms.saturating_sub(now_ms) + 1,
                        ));
                        self.retry.clock.sleep(nap).await;
                        continue;
                    }
                }
            };
            let now_ms = self.now_ms();
            let rec = Record {
                key: key.to_string(),
                status: RecordState::InProgress,
                payload_hash: hash.clone(),
                claim_id: claim_id.clone(),
                claimed_at_ms: now_ms,
                updated_at_ms: now_ms,
                expires_at_ms: now_ms.saturating_add(self.in_progress_timeout.as_millis() as u64),
                result: None,
            };
            match self.write(&rec, condition).await {
                Ok(version) => break ClaimHeld { version, rec },
                // Another worker moved first, or our write's fate is unknown:
                // the next read decides (our claim id there means it landed).
                Err(Error::Conflict { .. } | Error::NotFound { .. } | Error::Ambiguous { .. }) => {}
                Err(e) if e.is_retryable() => {
                    failures += 1;
                    if failures >= self.retry.max_attempts {
                        return Err(IdempotencyError::Store {
                            key: key.to_string(),
                            source: crate::retry::exhausted(e, failures),
                        });
                    }
                    self.retry.clock.sleep(self.retry.delay(failures - 1)).await;
                }
                Err(e) => {
                    return Err(IdempotencyError::Store {
                        key: key.to_string(),
                        source: e,
                    });
                }
            }
        };
        Ok(Step::Held(claim))
    }

    /// Stores the result over our claim. On failure, gives the result back with the reason.
    async fn store_result(
        &self,
        key: &str,
        claim: ClaimHeld,
        result: Value,
    ) -> Result<(), (Value, String)> {
        let ClaimHeld { mut version, rec } = claim;
        let mut attempts = self.retry.start();
        loop {
            attempts.begin();
            let now_ms = self.now_ms();
            let done = Record {
                status: RecordState::Completed,
                updated_at_ms: now_ms,
                expires_at_ms: now_ms.saturating_add(self.completed_ttl.as_millis() as u64),
                result: Some(result.clone()),
                ..rec.clone()
            };
            let transient = match self.write(&done, Condition::Matches(version.clone())).await {
                Ok(_) => {
                    self.cache()
                        .put(key, &rec.payload_hash, &result, done.expires_at_ms);
                    return Ok(());
                }
                Err(Error::Conflict { .. } | Error::NotFound { .. } | Error::Ambiguous { .. }) => {
                    match self.read::<std::convert::Infallible>(key).await {
                        Ok(Some((cur, v))) if cur.claim_id == rec.claim_id => {
                            if cur.status == RecordState::Completed {
                                self.cache().put(
                                    key,
                                    &rec.payload_hash,
                                    &result,
                                    cur.expires_at_ms,
                                );
                                return Ok(());
                            }
                            version = v;
                            None
                        }
                        Ok(Some((cur, _))) => {
                            return Err((
                                result,
                                format!(
                                    "our claim went stale and was taken over; found {} (claimed at {} ms)",
                                    cur.status, cur.claimed_at_ms
                                ),
                            ));
                        }
                        Ok(None) => {
                            return Err((
                                result,
                                "our claim went stale and the record was removed".to_string(),
                            ));
                        }
                        Err(e) => Some(e.to_string()),
                    }
                }
                Err(e) if e.is_retryable() => Some(e.to_string()),
                Err(e) => return Err((result, e.to_string())),
            };
            if !attempts.backoff().await {
                let reason = transient.unwrap_or_else(|| "the store kept failing".to_string());
                return Err((
                    result,
                    format!("{reason} (gave up after {} attempts)", attempts.made()),
                ));
            }
        }
    }

    /// Deletes our claim so a retry can run; true if it is gone (or no longer ours).
    async fn release(&self, key: &str, claim: ClaimHeld) -> bool {
        let ClaimHeld { mut version, rec } = claim;
        let rkey = self.record_key(key);
        let mut attempts = self.retry.start();
        loop {
            attempts.begin();
            match self
                .store
                .delete(&rkey, Condition::Matches(version.clone()))
                .await
            {
                Ok(()) => return true,
                Err(Error::Conflict { .. } | Error::NotFound { .. } | Error::Ambiguous { .. }) => {
                    match self.read::<std::convert::Infallible>(key).await {
                        Ok(Some((cur, v)))
                            if cur.claim_id == rec.claim_id
                                && cur.status == RecordState::InProgress =>
                        {
                            version = v;
                        }
                        // Gone, or someone else's now: nothing of ours to release.
                        Ok(_) => return true,
                        Err(e) => {
                            tracing::warn!(key, error = %e, "cannot check the idempotency claim");
                        }
                    }
                }
                Err(e) if e.is_retryable() => {}
                Err(e) => {
                    tracing::warn!(key, error = %e, "cannot release the idempotency claim");
                    return false;
                }
            }
            if !attempts.backoff().await {
                tracing::warn!(
                    key,
                    "gave up releasing the idempotency claim; it will go stale"
                );
                return false;
            }
        }
    }
}

/// What claiming found: our claim, or the stored result of an earlier one.
enum Step {
    Held(ClaimHeld),
    Done(Value),
}

/// A claim this call holds: its record and the version of our write.
struct ClaimHeld {
    version: Version,
    rec: Record,
}
#[cfg(test)]
mod tests {
    use super::*;

    fn idem() -> (Idempotency, Arc<crate::clock::ManualClock>) {
        let clock = Arc::new(crate::clock::ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        let store: DynStore = Arc::new(crate::store::memory::MemoryStore::new());
        let idem = Idempotency::new(store)
            .with_clock(clock.clone())
            .with_rng(SharedRng::seeded(7))
            .with_in_progress_timeout(Duration::from_secs(60));
        (idem, clock)
    }

    #[tokio::test]
    async fn claim_complete_then_duplicates_get_the_result() {
        let (idem, _) = idem();
        let payload = serde_json::json!({"n": 1});
        let Claim::Claimed(ticket) = idem.claim("k", &payload).await.unwrap() else {
            panic!("the first claim holds the key");
        };
        assert_eq!(ticket.key(), "k");
        // A concurrent duplicate is in progress; another payload is a mismatch.
        assert!(matches!(
            idem.claim("k", &payload).await,
            Err(IdempotencyError::InProgress { .. })
        ));
        assert!(matches!(
            idem.claim("k", &serde_json::json!({"n": 2})).await,
            Err(IdempotencyError::PayloadMismatch { .. })
        ));
        // Only the claim's holder may complete it.
        assert!(matches!(
            idem.complete("k", "someone-else", &1).await,
            Err(IdempotencyError::NotClaimed { .. })
        ));
        idem.complete("k", ticket.claim_id(), &serde_json::json!({"ok": true}))
            .await
            .unwrap();
        // Completing again is harmless; the first result stays.
        idem.complete("k", ticket.claim_id(), &serde_json::json!({"ok": false}))
            .await
            .unwrap();
        assert_eq!(
            idem.claim("k", &payload).await.unwrap(),
            Claim::Completed(serde_json::json!({"ok": true}))
        );
        // `run` sees the same record.
        let out = idem
            .run("k", &payload, || async {
                Ok::<_, std::io::Error>(serde_json::json!(0))
            })
            .await
            .unwrap();
        assert_eq!(out, Outcome::Duplicate(serde_json::json!({"ok": true})));
        // A completed claim cannot be abandoned.
        assert!(matches!(
            idem.abandon("k", ticket.claim_id()).await,
            Err(IdempotencyError::NotClaimed { .. })
        ));
    }

    #[tokio::test]
    async fn abandon_lets_the_next_claim_run() {
        let (idem, _) = idem();
        let Claim::Claimed(first) = idem.claim("a", "p").await.unwrap() else {
            panic!("claimed");
        };
        assert!(matches!(
            idem.abandon("a", "not-mine").await,
            Err(IdempotencyError::NotClaimed { .. })
        ));
        idem.abandon("a", first.claim_id()).await.unwrap();
        // Abandoning what is gone is fine.
        idem.abandon("a", first.claim_id()).await.unwrap();
        let Claim::Claimed(second) = idem.claim("a", "p").await.unwrap() else {
            panic!("claimed again");
        };
        assert_ne!(first.claim_id(), second.claim_id());
        // The abandoned claim cannot complete any more.
        assert!(matches!(
            idem.complete("a", first.claim_id(), &1).await,
            Err(IdempotencyError::NotClaimed { .. })
        ));
    }

    #[tokio::test]
    async fn a_stale_claim_is_taken_over_and_its_holder_cannot_complete() {
        let (idem, clock) = idem();
        let Claim::Claimed(old) = idem.claim("s", "p").await.unwrap() else {
            panic!("claimed");
        };
        clock.advance(Duration::from_secs(61));
        let Claim::Claimed(new) = idem.claim("s", "p").await.unwrap() else {
            panic!("stale claim taken over");
        };
        assert!(matches!(
            idem.complete("s", old.claim_id(), &"late").await,
            Err(IdempotencyError::NotClaimed { .. })
        ));
        idem.complete("s", new.claim_id(), &"done").await.unwrap();
        assert_eq!(
            idem.claim("s", "p").await.unwrap(),
            Claim::Completed(Value::from("done"))
        );
    }
}

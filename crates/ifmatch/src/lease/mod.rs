//! Leases: named distributed locks with a TTL, renewal, release by the owner
//! only, and **fencing tokens**, built on nothing but the [`Store`] trait.
//!
//! A lease named `N` lives in one record at `leases/N` (the prefix is
//! configurable). Every change to it is a conditional write:
//!
//! - **acquire** creates the record with `If-None-Match: *`, or replaces a
//!   released or expired one with `If-Match` on the version it read — never a
//!   blind overwrite, so of two workers taking over the same expired lease
//!   exactly one wins;
//! - **renew** and **release** write with `If-Match` on the version of the
//!   holder's own last write, so they land only while nobody else has touched
//!   the record; a holder that lost the lease gets [`LeaseError::NotOwner`].
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::time::Duration;
//! use ifmatch::lease::{Leases, LeaseError};
//!
//! let store = ifmatch::store::open("memory://").await?;
//! let leases = Leases::new(store);
//! let ttl = Duration::from_secs(30);
//! let mut lease = leases.acquire("nightly-rebuild", ttl, Duration::ZERO).await?;
//! // Another worker is told who holds it.
//! let err = leases.acquire("nightly-rebuild", ttl, Duration::ZERO).await.unwrap_err();
//! assert!(matches!(err, LeaseError::Held { .. }));
//! leases.renew(&mut lease).await?;
//! leases.release(&lease).await?;
//! // The next holder's fencing token is greater.
//! let next = leases.acquire("nightly-rebuild", ttl, Duration::ZERO).await?;
//! assert!(next.token() > lease.token());
//! # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
//! ```
//!
//! ## Fencing tokens
//!
//! Each acquisition gets a token strictly greater than every token handed out
//! before for that name: release does not delete the record but marks it
//! released and keeps its token, and a new holder writes `max(old + 1, now in
//! ms)`. The time part keeps tokens increasing even if an abandoned record is
//! removed by DynamoDB TTL (a day after it lapsed by default, see
//! [`Leases::with_retention`]). Pass the token to [`fenced_put`] so storage
//! rejects a write from a holder that was paused past its lease.
//!
//! ## Fenced values
//!
//! [`fenced_put`] stores the token *inside* the value, in a one-line header in
//! front of the caller's bytes:
//!
//! ```text
//! ifmatch-fence/1 1700000000123 9f86d081884c7d65\n<the caller's bytes>
//! ```
//!
//! (`ifmatch-fence/1`, the token in decimal, a random per-write id in 16 hex
//! digits, a newline). The token is thereby part of what determines the
//! version on every backend, S3 included, where a version is the ETag, a hash
//! of the bytes that metadata does not move. Read such values with
//! [`fenced_get`] (or [`FencedValue::decode`]), which strips the header. The
//! token and write id are also kept in metadata ([`META_FENCE`],
//! [`META_FENCE_WID`]), written by the same put, so checking the stored token
//! takes only a HEAD ([`stored_token`]).
//!
//! ## Record format
//!
//! The record is JSON: `{"name", "state": "held" | "released", "owner",
//! "token", "acquired_at_ms", "expires_at_ms", "updated_at_ms"}` (times in ms
//! since the epoch, by the writer's clock). Its store `expires_at` is the
//! lease's expiry plus the retention, so DynamoDB TTL removes abandoned records.
//!
//! ## Waiting, expiry and clock skew
//!
//! A waiter does not sleep a whole TTL: it reads the record's expiry and sleeps
//! until `expiry + skew` plus a little jitter (at most 100 ms), or one poll interval if that
//! comes first (to notice an early release). A lease counts as expired for
//! others only `skew` after its expiry (see [`Leases::with_skew`]), so clocks
//! that disagree by less than the skew never see two holders at once.
//!
//! ## Lost responses
//!
//! Every acquisition carries a fresh owner id. When a write's response is lost
//! ([`Error::Ambiguous`]) the record is read again: if it names our owner id
//! (and token) the write landed and the lease is ours; otherwise it did not
//! and the loop goes on. Renew and release resolve the same way.
//!
//! Time comes from the injected [`crate::clock::Clock`] and randomness from
//! [`SharedRng`], both taken from the [`RetryPolicy`] given to
//! [`Leases::with_retry`] (or set by [`Leases::with_clock`] / [`Leases::with_rng`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::clock::{DynClock, SharedRng};
use crate::error::Error;
use crate::retry::RetryPolicy;
#[cfg(doc)]
use crate::store::Store;
use crate::store::{Condition, DynStore, Metadata, PutOptions, Version};

mod fenced;
mod with_lease;

pub use fenced::{
    FENCE_HEADER_MAGIC, FENCE_HEADER_MAX_LEN, FenceError, FencedValue, META_FENCE, META_FENCE_WID,
    fenced_get, fenced_put, stored_token,
};
pub use with_lease::{LeaseGuard, LeaseStatus};

/// The default key prefix of lease records.
pub const DEFAULT_PREFIX: &str = "leases/";

/// The most a waiter sleeps past `expiry + skew` before trying a takeover
/// (jitter, so a crowd of waiters does not write in the same millisecond).
const TAKEOVER_JITTER_MS: u64 = 100;

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// Another worker held the lease for the whole wait budget.
    #[error(
        "lease '{name}' is held by {holder} (token {token}, expires in {expires_in:?}); gave up after waiting {waited:?}"
    )]
    Held {
        /// The lease name.
        name: String,
        /// The current holder's owner id.
        holder: String,
        /// The current holder's fencing token.
        token: u64,
        /// How long until the holder's lease expires (by our clock), before the skew allowance.
        expires_in: Duration,
        /// How long we waited.
        waited: Duration,
    },
    /// Renew or release by a worker that no longer holds (or never held) the lease.
    #[error("lease '{name}' is not held by {owner} (token {token}): found {found}")]
    NotOwner {
        /// The lease name.
        name: String,
        /// The owner id that tried.
        owner: String,
        /// The token it held.
        token: u64,
        /// The current holder, if someone else holds the lease now.
        holder: Option<String>,
        /// What the record holds now.
        found: String,
    },
    /// A write's response was lost and the record could not be read to settle it.
    #[error("lease '{name}': outcome unknown: {message}")]
    Ambiguous {
        /// The lease name.
        name: String,
        /// What happened.
        message: String,
    },
    /// The lease record is not one this module wrote.
    #[error("lease '{name}': the record at '{key}' is not a lease record: {message}")]
    Corrupt {
        /// The lease name.
        name: String,
        /// The record's key.
        key: String,
        /// Why it could not be read.
        message: String,
    },
    /// A request was not valid (a zero TTL, a bad name).
    #[error("invalid lease request: {0}")]
    Invalid(String),
    /// The store failed (non-retryable, or retryable beyond the budget).
    #[error("lease '{name}': {source}")]
    Store {
        /// The lease name.
        name: String,
        /// The store's error.
        #[source]
        source: Error,
    },
}

impl LeaseError {
    /// The classification, for exit codes and HTTP statuses.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            LeaseError::Held { .. } | LeaseError::NotOwner { .. } => crate::ErrorKind::Conflict,
            LeaseError::Ambiguous { .. } => crate::ErrorKind::Ambiguous,
            LeaseError::Corrupt { .. } => crate::ErrorKind::Other,
            LeaseError::Invalid(_) => crate::ErrorKind::Invalid,
            LeaseError::Store { source, .. } => source.kind(),
        }
    }
}

/// Whether a record is held or was released.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum State {
    Held,
    Released,
}

/// The JSON body of a lease record.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct Record {
    /// The lease name (for people reading the store).
    name: String,
    /// Held or released.
    state: State,
    /// The owner id of the current (or last) holder.
    owner: String,
    /// The fencing token of the current (or last) holder.
    token: u64,
    /// When the current (or last) holder acquired it, ms since the epoch.
    acquired_at_ms: u64,
    /// When it expires (or was released), ms since the epoch, by the writer's clock.
    expires_at_ms: u64,
    /// When the record was last written, ms since the epoch.
    updated_at_ms: u64,
}

impl Record {
    fn describe(&self) -> String {
        match self.state {
            State::Held => format!(
                "held by {} with token {} until {} ms",
                self.owner, self.token, self.expires_at_ms
            ),
            State::Released => format!("released by {} (last token {})", self.owner, self.token),
        }
    }
}

/// A held lease: the capability to renew, release and fence writes.
///
/// It is plain data (serializable), so a stateless worker can carry it from
/// one invocation to the next. Its version is the version of the holder's own
/// last write to the record; renew and release land only while the record is
/// still at that version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    name: String,
    owner: String,
    token: u64,
    acquired_at_ms: u64,
    expires_at_ms: u64,
    ttl_ms: u64,
    version: Version,
}

impl Lease {
    /// The lease name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// This holder's owner id (unique per acquisition).
    pub fn owner(&self) -> &str {
        &self.owner
    }
    /// The fencing token: greater than every token handed out before for this name.
    pub fn token(&self) -> u64 {
        self.token
    }
    /// When the lease was acquired (by the acquirer's clock).
    pub fn acquired_at(&self) -> SystemTime {
        from_ms(self.acquired_at_ms)
    }
    /// When the lease expires unless renewed (by the holder's clock).
    pub fn expires_at(&self) -> SystemTime {
        from_ms(self.expires_at_ms)
    }
    /// The TTL each renewal extends the lease by.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }
    /// The version of the holder's last write to the lease record.
    pub fn version(&self) -> &Version {
        &self.version
    }
    /// How long until the lease expires at `now` (zero if it has).
    pub fn expires_in(&self, now: SystemTime) -> Duration {
        Duration::from_millis(self.expires_at_ms.saturating_sub(to_ms(now)))
    }
}

/// What a lease record says, as [`Leases::inspect`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The lease name.
    pub name: String,
    /// The current (or last) holder's owner id.
    pub owner: String,
    /// The current (or last) fencing token.
    pub token: u64,
    /// Whether the last holder released it.
    pub released: bool,
    /// When the current (or last) holder acquired it, by its clock.
    pub acquired_at: SystemTime,
    /// When it expires (or was released), by the writer's clock.
    pub expires_at: SystemTime,
    /// The record's version.
    pub version: Version,
}

impl LeaseInfo {
    /// The held lease this record describes, renewing by `ttl` (`None` if it
    /// was released): for a holder that could not keep its [`Lease`] value,
    /// such as an HTTP client between requests, once it has proved it is
    /// [`LeaseInfo::owner`]. Renew and release stay conditional on
    /// [`LeaseInfo::version`], so a lease rebuilt from a stale read cannot land.
    pub fn into_lease(self, ttl: Duration) -> Option<Lease> {
        (!self.released).then(|| Lease {
            name: self.name,
            owner: self.owner,
            token: self.token,
            acquired_at_ms: to_ms(self.acquired_at),
            expires_at_ms: to_ms(self.expires_at),
            ttl_ms: ttl.as_millis() as u64,
            version: self.version,
        })
    }
}

/// A handle to the leases in one store; cheap to clone. See the module docs.
#[derive(Debug, Clone)]
pub struct Leases {
    store: DynStore,
    prefix: String,
    skew: Duration,
    poll: Duration,
    retention: Duration,
    holder: String,
    retry: RetryPolicy,
}

impl Leases {
    /// Leases kept under `leases/` in `store`, with a 1 s skew allowance, a 1 s
    /// poll interval, a day of retention and the default retry policy.
    pub fn new(store: DynStore) -> Self {
        Leases {
            store,
            prefix: DEFAULT_PREFIX.to_string(),
            skew: Duration::from_secs(1),
            poll: Duration::from_secs(1),
            retention: Duration::from_secs(24 * 3600),
            holder: "worker".to_string(),
            retry: RetryPolicy::default(),
        }
    }
    /// Keeps lease records under `prefix` (e.g. `"locks/"`).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
    /// How much later than its recorded expiry a lease may be taken over, to
    /// allow for clocks that disagree.
    pub fn with_skew(mut self, skew: Duration) -> Self {
        self.skew = skew;
        self
    }
    /// The longest a waiter sleeps between two reads of a held lease (it
    /// sleeps less when the lease expires sooner). At least 1 ms.
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(1));
        self
    }
    /// How long after it lapses a record may be removed by the backend
    /// (DynamoDB TTL); long enough that a removed record's token is below the
    /// clock-based token of any later holder.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }
    /// A readable name for this worker, put in front of its owner ids (for messages).
    pub fn with_holder_name(mut self, name: impl Into<String>) -> Self {
        self.holder = name.into();
        self
    }
    /// The retry policy for transient store errors; its clock and generator
    /// are the ones the leases use.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }
    /// Sets the clock (also the retry policy's).
    pub fn with_clock(mut self, clock: DynClock) -> Self {
        self.retry.clock = clock;
        self
    }
    /// Sets the random generator (also the retry policy's). Owner ids are
    /// drawn from it: workers must not share a seed (nor a holder name, to be safe).
    pub fn with_rng(mut self, rng: SharedRng) -> Self {
        self.retry.rng = rng;
        self
    }
    /// The store the records live in.
    pub fn store(&self) -> &DynStore {
        &self.store
    }
    /// The key of the record of lease `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    fn clock(&self) -> &DynClock {
        &self.retry.clock
    }

    fn now_ms(&self) -> u64 {
        to_ms(self.clock().now())
    }

    fn new_owner_id(&self) -> String {
        format!(
            "{}-{:016x}{:08x}",
            self.holder,
            self.retry.rng.next_u64(),
            self.retry.rng.next_u64() as u32
        )
    }

    fn store_err(&self, name: &str, source: Error) -> LeaseError {
        LeaseError::Store {
            name: name.to_string(),
            source,
        }
    }

    /// Reads the record of `name`, retrying transient errors within the policy.
    async fn read(&self, name: &str) -> Result<Option<(Record, Version)>, LeaseError> {
        let key = self.key(name);
        let got = self
            .retry
            .run(|| async {
                match self.store.get(&key).await {
                    Ok(o) => Ok(Some(o)),
                    Err(Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await
            .map_err(|e| self.store_err(name, e))?;
        match got {
            None => Ok(None),
            Some(o) => {
                let rec: Record =
                    serde_json::from_slice(&o.body).map_err(|e| LeaseError::Corrupt {
                        name: name.to_string(),
                        key: key.clone(),
                        message: e.to_string(),
                    })?;
                Ok(Some((rec, o.meta.version)))
            }
        }
    }

    async fn write(
        &self,
        name: &str,
        rec: &Record,
        condition: Condition,
    ) -> Result<Result<Version, Error>, LeaseError> {
        let body = serde_json::to_vec(rec).map_err(|e| LeaseError::Corrupt {
            name: name.to_string(),
            key: self.key(name),
            message: format!("cannot encode the record: {e}"),
        })?;
        let lapse_ms = rec.expires_at_ms.max(rec.updated_at_ms);
        let expires_at =
            (lapse_ms.saturating_add(self.retention.as_millis() as u64)).div_ceil(1000);
        let opts = PutOptions {
            condition,
            metadata: Metadata::new(),
            expires_at: Some(expires_at),
        };
        Ok(self
            .store
            .put(&self.key(name), Bytes::from(body), opts)
            .await)
    }

    /// Reads what the record of lease `name` says (`None` if it was never taken).
    pub async fn inspect(&self, name: &str) -> Result<Option<LeaseInfo>, LeaseError> {
        Ok(self.read(name).await?.map(|(rec, version)| LeaseInfo {
            name: name.to_string(),
            owner: rec.owner,
            token: rec.token,
            released: rec.state == State::Released,
            acquired_at: from_ms(rec.acquired_at_ms),
            expires_at: from_ms(rec.expires_at_ms),
            version,
        }))
    }

    /// Acquires lease `name` for `ttl`, waiting up to `wait` for the current
    /// holder to release it or let it expire.
    ///
    /// After the wait budget, [`LeaseError::Held`] names the holder and when
    /// its lease expires. `wait` of zero tries once.
    pub async fn acquire(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LeaseError> {
        let ttl_ms = ttl.as_millis() as u64;
        if ttl_ms == 0 {
            return Err(LeaseError::Invalid(format!(
                "lease '{name}': the TTL must be at least 1 ms"
            )));
        }
        crate::key::validate_key(&self.key(name))
            .map_err(|e| LeaseError::Invalid(e.to_string()))?;
        let started = self.clock().now();
        let owner = self.new_owner_id();
        let skew_ms = self.skew.as_millis() as u64;
        // Consecutive transient write failures (the wait budget bounds the rest).
        let mut failures = 0u32;
        // Set when an acquire write's response was lost and not yet settled.
        let mut unsettled: Option<u64> = None;
        loop {
            let current = match self.read(name).await {
                Ok(c) => c,
                // We may hold the lease without knowing: say so, with its expiry.
                Err(e) => match unsettled {
                    Some(expires_at_ms) => {
                        return Err(LeaseError::Ambiguous {
                            name: name.to_string(),
                            message: format!(
                                "an acquire's response was lost and the record cannot be read ({e}); if it landed, the lease lapses at {expires_at_ms} ms"
                            ),
                        });
                    }
                    None => return Err(e),
                },
            };
            unsettled = None;
            let now_ms = self.now_ms();
            let waited = self
                .clock()
                .now()
                .duration_since(started)
                .unwrap_or_default();
            let (condition, prev_token) = match &current {
                None => (Condition::Absent, 0),
                Some((rec, version)) => {
                    if rec.state == State::Held && rec.owner == owner {
                        // Our own write, whose response was lost, landed.
                        if now_ms < rec.expires_at_ms {
                            return Ok(Lease {
                                name: name.to_string(),
                                owner,
                                token: rec.token,
                                acquired_at_ms: rec.acquired_at_ms,
                                expires_at_ms: rec.expires_at_ms,
                                ttl_ms,
                                version: version.clone(),
                            });
                        }
                        // ... but so long ago that it lapsed: take it again.
                    } else if rec.state == State::Held
                        && now_ms < rec.expires_at_ms.saturating_add(skew_ms)
                    {
                        if waited >= wait {
                            return Err(LeaseError::Held {
                                name: name.to_string(),
                                holder: rec.owner.clone(),
                                token: rec.token,
                                expires_in: Duration::from_millis(
                                    rec.expires_at_ms.saturating_sub(now_ms),
                                ),
                                waited,
                            });
                        }
                        let until_takeable = Duration::from_millis(
                            rec.expires_at_ms.saturating_add(skew_ms) - now_ms,
                        );
                        let nap = self.nap(until_takeable, wait - waited);
                        self.clock().sleep(nap).await;
                        continue;
                    }
                    (Condition::Matches(version.clone()), rec.token)
                }
            };
            let now_ms = self.now_ms();
            let token = prev_token.saturating_add(1).max(now_ms);
            let rec = Record {
                name: name.to_string(),
                state: State::Held,
                owner: owner.clone(),
                token,
                acquired_at_ms: now_ms,
                expires_at_ms: now_ms.saturating_add(ttl_ms),
                updated_at_ms: now_ms,
            };
            match self.write(name, &rec, condition).await? {
                Ok(version) => {
                    return Ok(Lease {
                        name: name.to_string(),
                        owner,
                        token,
                        acquired_at_ms: rec.acquired_at_ms,
                        expires_at_ms: rec.expires_at_ms,
                        ttl_ms,
                        version,
                    });
                }
                // Someone else got there first: look again.
                Err(Error::Conflict { .. } | Error::NotFound { .. }) => {}
                // The write may have landed: the next read tells (our owner id).
                Err(Error::Ambiguous { .. }) => {
                    tracing::debug!(lease = name, "acquire response lost; re-reading");
                    unsettled = Some(rec.expires_at_ms);
                }
                Err(e) if e.is_retryable() => {
                    failures += 1;
                    if failures >= self.retry.max_attempts {
                        return Err(self.store_err(name, crate::retry::exhausted(e, failures)));
                    }
                    self.clock().sleep(self.retry.delay(failures - 1)).await;
                }
                Err(e) => return Err(self.store_err(name, e)),
            }
        }
    }

    /// Sleeps the backoff before another attempt, after `made` attempts since
    /// `started`; false (at once) if the attempt limit, the policy's deadline or
    /// `limit` would be passed.
    async fn pause(&self, made: u32, started: SystemTime, limit: Option<SystemTime>) -> bool {
        if made >= self.retry.max_attempts {
            return false;
        }
        let delay = self.retry.delay(made.saturating_sub(1));
        let wake = self.clock().now() + delay;
        if let Some(d) = self.retry.deadline
            && wake >= started + d
        {
            return false;
        }
        if limit.is_some_and(|limit| wake >= limit) {
            return false;
        }
        self.clock().sleep(delay).await;
        true
    }

    /// How long a waiter sleeps: until the lease can be taken (plus jitter),
    /// or a jittered poll interval, whichever is first, within the budget left.
    fn nap(&self, until_takeable: Duration, budget_left: Duration) -> Duration {
        let rng = &self.retry.rng;
        let poll_ms = self.poll.as_millis().max(1) as u64;
        let spread = (poll_ms / 4).min(TAKEOVER_JITTER_MS);
        let to_expiry = until_takeable + Duration::from_millis(rng.up_to(spread));
        let poll = Duration::from_millis(poll_ms / 2 + rng.up_to(poll_ms - poll_ms / 2));
        to_expiry
            .min(poll)
            .min(budget_left)
            .max(Duration::from_millis(1))
    }

    /// Extends a lease we hold by its TTL from now.
    ///
    /// Lands only if the record is still at the version of our last write;
    /// [`LeaseError::NotOwner`] if another worker has taken it over (or it was released).
    pub async fn renew(&self, lease: &mut Lease) -> Result<(), LeaseError> {
        self.renew_until(lease, None).await
    }

    /// Renews, retrying transient errors within the policy and (if given) before `limit`.
    async fn renew_until(
        &self,
        lease: &mut Lease,
        limit: Option<SystemTime>,
    ) -> Result<(), LeaseError> {
        let started = self.clock().now();
        let mut made = 0u32;
        loop {
            made += 1;
            let now_ms = self.now_ms();
            let rec = Record {
                name: lease.name.clone(),
                state: State::Held,
                owner: lease.owner.clone(),
                token: lease.token,
                acquired_at_ms: lease.acquired_at_ms,
                expires_at_ms: now_ms.saturating_add(lease.ttl_ms),
                updated_at_ms: now_ms,
            };
            let result = self
                .write(&lease.name, &rec, Condition::Matches(lease.version.clone()))
                .await?;
            let err = match result {
                Ok(version) => {
                    lease.version = version;
                    lease.expires_at_ms = rec.expires_at_ms;
                    return Ok(());
                }
                Err(e) => e,
            };
            match err {
                Error::Conflict { .. } | Error::NotFound { .. } | Error::Ambiguous { .. } => {
                    // Ours still (a lost response of our own), or someone else's?
                    match self.read(&lease.name).await? {
                        Some((cur, version))
                            if cur.state == State::Held
                                && cur.owner == lease.owner
                                && cur.token == lease.token =>
                        {
                            lease.version = version;
                            if cur.expires_at_ms == rec.expires_at_ms {
                                lease.expires_at_ms = cur.expires_at_ms;
                                return Ok(());
                            }
                            // Still ours, at a version we did not know: write again.
                        }
                        other => return Err(not_owner(lease, other.map(|(r, _)| r))),
                    }
                }
                e if e.is_retryable() => {}
                e => return Err(self.store_err(&lease.name, e)),
            }
            if !self.pause(made, started, limit).await {
                return Err(self.store_err(
                    &lease.name,
                    Error::Unavailable {
                        message: format!(
                            "could not renew lease '{}' after {made} attempts",
                            lease.name
                        ),
                        source: None,
                    },
                ));
            }
        }
    }

    /// Gives a lease back, keeping its token in the record so the next holder's is greater.
    ///
    /// Only the owner can release: [`LeaseError::NotOwner`] if another worker
    /// has taken it over. Releasing twice is fine. If a release sent while the
    /// lease was live loses its response and the lease has a new holder by the
    /// time it is read again, the release landed (a live lease is never taken
    /// over) and this returns `Ok`.
    pub async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        let mut version = lease.version.clone();
        let mut valid_until_ms = lease.expires_at_ms;
        // Whether a release whose response was lost was sent while the lease was ours.
        let mut lost_while_valid = false;
        let mut attempts = self.retry.start();
        loop {
            attempts.begin();
            let now_ms = self.now_ms();
            let rec = Record {
                name: lease.name.clone(),
                state: State::Released,
                owner: lease.owner.clone(),
                token: lease.token,
                acquired_at_ms: lease.acquired_at_ms,
                expires_at_ms: now_ms,
                updated_at_ms: now_ms,
            };
            let err = match self
                .write(&lease.name, &rec, Condition::Matches(version.clone()))
                .await?
            {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            match err {
                Error::Conflict { .. } | Error::NotFound { .. } | Error::Ambiguous { .. } => {
                    if matches!(err, Error::Ambiguous { .. }) && now_ms < valid_until_ms {
                        lost_while_valid = true;
                    }
                    match self.read(&lease.name).await? {
                        Some((cur, v)) if cur.owner == lease.owner && cur.token == lease.token => {
                            if cur.state == State::Released {
                                return Ok(());
                            }
                            valid_until_ms = valid_until_ms.max(cur.expires_at_ms);
                            version = v;
                        }
                        // A release sent while the lease was live landed: nobody
                        // may take a live lease over, so whoever holds it now came
                        // after our release.
                        Some(_) | None if lost_while_valid => return Ok(()),
                        other => return Err(not_owner(lease, other.map(|(r, _)| r))),
                    }
                }
                e if e.is_retryable() => {}
                e => return Err(self.store_err(&lease.name, e)),
            }
            if !attempts.backoff().await {
                return Err(LeaseError::Ambiguous {
                    name: lease.name.clone(),
                    message: format!(
                        "could not confirm the release after {} attempts; the lease expires at {} ms",
                        attempts.made(),
                        valid_until_ms
                    ),
                });
            }
        }
    }
}

fn not_owner(lease: &Lease, found: Option<Record>) -> LeaseError {
    let (holder, found) = match found {
        None => (None, "no lease record".to_string()),
        Some(r) => (
            (r.state == State::Held).then(|| r.owner.clone()),
            r.describe(),
        ),
    };
    LeaseError::NotOwner {
        name: lease.name.clone(),
        owner: lease.owner.clone(),
        token: lease.token,
        holder,
        found,
    }
}

pub(crate) fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

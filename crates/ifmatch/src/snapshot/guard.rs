//! Build guards: let only one worker rebuild a snapshot at a time while the
//! others wait for its result. The [`BuildGuard`] trait, and two
//! implementations: [`StoreBuildGuard`] (a marker key in any store) and
//! [`LeaseBuildGuard`] (a real lease with a fencing token). A guard is an
//! optimisation only; the publisher's conditional head write keeps versions
//! correct whatever a guard does.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::{DEFAULT_PREFIX, ms, validate_name};
use crate::clock::{DynClock, SharedRng};
use crate::error::Error;
use crate::store::{Condition, DynStore, PutOptions, Version};

/// Proof of holding a [`BuildGuard`], returned to [`BuildGuard::release`].
/// Opaque to the publisher: each guard puts in it what it needs (a store
/// version, a lease id and fencing token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardTicket {
    /// The guard's own token.
    pub token: String,
}

/// Lets only one worker build a snapshot at a time; the others wait for its result.
///
/// An optimisation, not the safety net: the conditional head write keeps
/// versions gap-free and unique whatever the guard does, so an implementation
/// may fail open (a guard that expires mid-build costs a duplicate build).
/// The real lease module can back this trait later; [`StoreBuildGuard`] is a
/// simple store-based implementation.
#[async_trait]
pub trait BuildGuard: Send + Sync + fmt::Debug {
    /// Tries to become the one builder of `name`: `Some` if acquired, `None`
    /// if another worker holds it.
    async fn try_acquire(&self, name: &str) -> Result<Option<GuardTicket>, Error>;
    /// Gives the guard up. Releasing a guard that expired and was taken over
    /// is not an error, and must not disturb the new holder.
    async fn release(&self, name: &str, ticket: GuardTicket) -> Result<(), Error>;
}

/// The marker record of a [`StoreBuildGuard`].
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    owner: String,
    acquired_ms: u64,
    expires_ms: u64,
}

/// A [`BuildGuard`] made of a "building" marker key in a store.
///
/// - **acquire**: create `PREFIX/NAME/building` with `If-None-Match: *`,
///   holding an owner id and an expiry (`now + ttl`, on the injected clock;
///   also passed to the store as an advisory TTL);
/// - **held by another**: if the marker has expired, take it over with
///   `If-Match` on the version read (two workers taking over the same stale
///   marker cannot both win); otherwise report it held;
/// - **release**: delete with `If-Match` on our version, so a worker whose
///   marker expired and was taken over does not delete the new holder's;
/// - **lost response** on a marker write: re-read and compare the owner id.
///
/// There is no renewal: choose a `ttl` comfortably longer than a build. If a
/// build outlives it, another worker may build too; the head's conditional
/// write still keeps versions correct.
#[derive(Clone, Debug)]
pub struct StoreBuildGuard {
    store: DynStore,
    prefix: String,
    ttl: Duration,
    clock: DynClock,
    rng: SharedRng,
}

impl StoreBuildGuard {
    /// A guard in `store` whose markers expire after `ttl`, under [`DEFAULT_PREFIX`],
    /// on the real clock.
    pub fn new(store: DynStore, ttl: Duration) -> Self {
        StoreBuildGuard {
            store,
            prefix: DEFAULT_PREFIX.to_string(),
            ttl,
            clock: crate::clock::SystemClock::shared(),
            rng: SharedRng::from_entropy(),
        }
    }
    /// Sets the key prefix (use the publisher's, so the marker sits next to the head).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().trim_end_matches('/').to_string();
        self
    }
    /// Sets the clock that stamps and judges expiry.
    pub fn with_clock(mut self, clock: DynClock) -> Self {
        self.clock = clock;
        self
    }
    /// Sets the random generator of owner ids.
    pub fn with_rng(mut self, rng: SharedRng) -> Self {
        self.rng = rng;
        self
    }

    fn key(&self, name: &str) -> Result<String, Error> {
        validate_name(name).map_err(|e| Error::InvalidInput(e.to_string()))?;
        Ok(if self.prefix.is_empty() {
            format!("{name}/building")
        } else {
            format!("{}/{name}/building", self.prefix)
        })
    }

    /// After a lost response: is the marker ours?
    async fn check_owner(&self, key: &str, owner: &str) -> Result<Option<GuardTicket>, Error> {
        match self.store.get(key).await {
            Ok(obj) => match serde_json::from_slice::<Marker>(&obj.body) {
                Ok(m) if m.owner == owner => Ok(Some(GuardTicket {
                    token: obj.meta.version.as_str().to_string(),
                })),
                _ => Ok(None),
            },
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl BuildGuard for StoreBuildGuard {
    async fn try_acquire(&self, name: &str) -> Result<Option<GuardTicket>, Error> {
        let key = self.key(name)?;
        let owner = format!("{:016x}", self.rng.next_u64());
        let now = self.clock.now_ms();
        let expires_ms = now.saturating_add(ms(self.ttl));
        let marker = Marker {
            owner: owner.clone(),
            acquired_ms: now,
            expires_ms,
        };
        let body = Bytes::from(
            serde_json::to_vec(&marker).map_err(|e| Error::other("encoding a guard marker", e))?,
        );
        let expiry = Some(expires_ms / 1000 + 1);
        let ticket = |v: Version| {
            Some(GuardTicket {
                token: v.as_str().to_string(),
            })
        };
        // A marker released between our create and our read sends us round again.
        for _ in 0..3 {
            let create = PutOptions::if_absent().with_expiry(expiry);
            match self.store.put(&key, body.clone(), create).await {
                Ok(v) => return Ok(ticket(v)),
                Err(Error::Ambiguous { .. }) => return self.check_owner(&key, &owner).await,
                Err(Error::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
            let held = match self.store.get(&key).await {
                Ok(obj) => obj,
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            // An unreadable marker is treated as expired: taking it over is safe.
            let expired = serde_json::from_slice::<Marker>(&held.body)
                .map(|m| m.expires_ms <= now)
                .unwrap_or(true);
            if !expired {
                return Ok(None);
            }
            debug!(key, "taking over an expired build marker");
            let takeover = PutOptions::if_matches(held.meta.version.clone()).with_expiry(expiry);
            return match self.store.put(&key, body.clone(), takeover).await {
                Ok(v) => Ok(ticket(v)),
                Err(Error::Conflict { .. }) => Ok(None),
                Err(Error::Ambiguous { .. }) => self.check_owner(&key, &owner).await,
                Err(e) => Err(e),
            };
        }
        Ok(None)
    }

    async fn release(&self, name: &str, ticket: GuardTicket) -> Result<(), Error> {
        let key = self.key(name)?;
        match self
            .store
            .delete(&key, Condition::Matches(Version::new(ticket.token)))
            .await
        {
            Ok(()) => Ok(()),
            // Expired and taken over (or already gone): not ours to delete.
            Err(Error::Conflict { .. }) | Err(Error::NotFound { .. }) => {
                debug!(key, "build marker was taken over before release");
                Ok(())
            }
            // Either it was deleted or it will expire.
            Err(Error::Ambiguous { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A [`BuildGuard`] backed by a real lease ([`crate::lease`]): the builder
/// holds the lease `snapshot-build/NAME` for `ttl` and releases it when done.
///
/// Unlike [`StoreBuildGuard`], the lease carries a fencing token and its
/// takeover after expiry honours the configured clock-skew allowance. A
/// release that finds the lease expired and taken over is not an error (the
/// new holder is left alone), as [`BuildGuard::release`] requires.
#[derive(Debug, Clone)]
pub struct LeaseBuildGuard {
    leases: crate::lease::Leases,
    ttl: Duration,
}

impl LeaseBuildGuard {
    /// A guard taking leases from `leases`, each for `ttl`.
    pub fn new(leases: crate::lease::Leases, ttl: Duration) -> Self {
        LeaseBuildGuard { leases, ttl }
    }

    fn lease_name(name: &str) -> String {
        format!("snapshot-build/{name}")
    }
}

fn lease_error(e: crate::lease::LeaseError) -> Error {
    match e {
        crate::lease::LeaseError::Store { source, .. } => source,
        other => Error::msg(other.to_string()),
    }
}

#[async_trait]
impl BuildGuard for LeaseBuildGuard {
    async fn try_acquire(&self, name: &str) -> Result<Option<GuardTicket>, Error> {
        match self
            .leases
            .acquire(&Self::lease_name(name), self.ttl, Duration::ZERO)
            .await
        {
            Ok(lease) => {
                let token = serde_json::to_string(&lease)
                    .map_err(|e| Error::msg(format!("cannot encode a lease: {e}")))?;
                Ok(Some(GuardTicket { token }))
            }
            Err(crate::lease::LeaseError::Held { .. }) => Ok(None),
            Err(e) => Err(lease_error(e)),
        }
    }

    async fn release(&self, _name: &str, ticket: GuardTicket) -> Result<(), Error> {
        let lease: crate::lease::Lease = serde_json::from_str(&ticket.token)
            .map_err(|e| Error::msg(format!("not a lease ticket: {e}")))?;
        match self.leases.release(&lease).await {
            Ok(()) | Err(crate::lease::LeaseError::NotOwner { .. }) => Ok(()),
            Err(e) => Err(lease_error(e)),
        }
    }
}

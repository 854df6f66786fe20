//! [`Leases::with_lease`]: run a piece of work while holding a lease, renewing
//! it in the background every third of its TTL, and releasing it afterwards.
//!
//! The work gets a [`LeaseGuard`] with the fencing token and a live
//! [`LeaseStatus`]. What it guarantees: renewal stops (and the status says so)
//! as soon as another worker holds the lease ([`LeaseStatus::Lost`]) or while
//! a third of the TTL is still left after renewals kept failing
//! ([`LeaseStatus::Unavailable`]), so the work has time to stop before anyone
//! can take the lease over; the lease is released afterwards unless it was
//! lost (release is owner-checked). The work itself is never cancelled.

use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

#[cfg(doc)]
use super::fenced_put;
use super::{Lease, LeaseError, Leases};

/// The state of a lease held by [`Leases::with_lease`], as the work future sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStatus {
    /// Still held, until at least this time (by our clock).
    Held {
        /// The current expiry.
        expires_at: SystemTime,
    },
    /// Another worker took the lease over (or the record changed under us):
    /// stop at once, writes with our token will be fenced off.
    Lost {
        /// The new holder's owner id, if someone holds it.
        holder: Option<String>,
        /// What the record held.
        found: String,
    },
    /// The store could not be reached to renew before the lease ran short:
    /// the lease may be lost; stop before it expires.
    Unavailable {
        /// The last error.
        message: String,
        /// When the lease expires if it was not renewed.
        expires_at: SystemTime,
    },
    /// The work finished and the lease was given back.
    Released,
}

impl LeaseStatus {
    /// True while the lease is held.
    pub fn is_held(&self) -> bool {
        matches!(self, LeaseStatus::Held { .. })
    }
}

/// What the work future of [`Leases::with_lease`] gets: the token, and news of the lease.
#[derive(Debug, Clone)]
pub struct LeaseGuard {
    name: String,
    owner: String,
    token: u64,
    status: watch::Receiver<LeaseStatus>,
}

impl LeaseGuard {
    /// The lease name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Our owner id.
    pub fn owner(&self) -> &str {
        &self.owner
    }
    /// The fencing token to pass to [`fenced_put`].
    pub fn token(&self) -> u64 {
        self.token
    }
    /// The current status.
    pub fn status(&self) -> LeaseStatus {
        self.status.borrow().clone()
    }
    /// True while the lease is held (renewals succeeding).
    pub fn is_held(&self) -> bool {
        self.status.borrow().is_held()
    }
    /// Resolves when the lease stops being held (lost, unavailable or released),
    /// with the reason. Use it in `tokio::select!` next to the work.
    pub async fn lost(&self) -> LeaseStatus {
        let mut rx = self.status.clone();
        loop {
            let now = rx.borrow_and_update().clone();
            if !now.is_held() {
                return now;
            }
            if rx.changed().await.is_err() {
                let last = rx.borrow().clone();
                return if last.is_held() {
                    LeaseStatus::Released
                } else {
                    last
                };
            }
        }
    }
}

impl Leases {
    /// Acquires lease `name`, runs `work` while renewing the lease every
    /// `ttl / 3`, then releases it and returns `work`'s output.
    ///
    /// `work` gets a [`LeaseGuard`] with the fencing token and the lease's
    /// status: [`LeaseGuard::lost`] resolves with [`LeaseStatus::Lost`] when
    /// another worker took the lease over, or [`LeaseStatus::Unavailable`]
    /// when renewals kept failing until a third of the TTL was left. The work
    /// is not cancelled: it decides (and its fenced writes are refused anyway).
    pub async fn with_lease<F, Fut, T>(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
        work: F,
    ) -> Result<T, LeaseError>
    where
        F: FnOnce(LeaseGuard) -> Fut,
        Fut: Future<Output = T>,
    {
        let mut lease = self.acquire(name, ttl, wait).await?;
        let (tx, rx) = watch::channel(LeaseStatus::Held {
            expires_at: lease.expires_at(),
        });
        let guard = LeaseGuard {
            name: name.to_string(),
            owner: lease.owner.clone(),
            token: lease.token,
            status: rx,
        };
        let out = {
            let work = work(guard);
            tokio::pin!(work);
            let renewer = self.keep_renewed(&mut lease, &tx);
            tokio::pin!(renewer);
            let mut renewing = true;
            loop {
                tokio::select! {
                    out = &mut work => break out,
                    _ = &mut renewer, if renewing => renewing = false,
                }
            }
        };
        // Give the lease back unless another worker has it. After a spell of
        // unavailability it may well still be ours; release is owner-checked.
        let lost = matches!(*tx.borrow(), LeaseStatus::Lost { .. });
        if !lost {
            if let Err(e) = self.release(&lease).await {
                tracing::warn!(lease = name, error = %e, "could not release the lease; it will expire");
            }
            tx.send_replace(LeaseStatus::Released);
        }
        Ok(out)
    }

    /// Renews `lease` every third of its TTL until renewal fails; reports through `tx`.
    async fn keep_renewed(&self, lease: &mut Lease, tx: &watch::Sender<LeaseStatus>) {
        let ttl = lease.ttl();
        loop {
            self.clock().sleep(ttl / 3).await;
            // Give up on transient errors while a third of the TTL is left, so
            // the work has time to stop before the lease can be taken over.
            let limit = lease.expires_at().checked_sub(ttl / 3);
            match self.renew_until(lease, limit).await {
                Ok(()) => {
                    tx.send_replace(LeaseStatus::Held {
                        expires_at: lease.expires_at(),
                    });
                }
                Err(LeaseError::NotOwner { holder, found, .. }) => {
                    tracing::warn!(lease = %lease.name, %found, "lease lost to another holder");
                    tx.send_replace(LeaseStatus::Lost { holder, found });
                    return;
                }
                Err(e) => {
                    tracing::warn!(lease = %lease.name, error = %e, "cannot renew the lease");
                    tx.send_replace(LeaseStatus::Unavailable {
                        message: e.to_string(),
                        expires_at: lease.expires_at(),
                    });
                    return;
                }
            }
        }
    }
}

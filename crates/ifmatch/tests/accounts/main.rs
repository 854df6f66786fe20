//! Accounts tests, written once against [`DynStore`] and run on every store
//! from [`backends::backends`].
//!
//! - [`seed_5_1`], [`seed_5_2`], [`seed_5_3`]: seed 003's day-5 tests
//!   (registration, authentication, CRUD), one test per check, 22 in all,
//!   each named after the seed's numbering.
//! - [`legacy`]: bcrypt hashes in the seed's format verify and are upgraded.
//! - [`behaviour`]: concurrency, case folding, rules, the record format, paging.
//! - [`identity`]: account ids are never reused, revisions, password
//!   changes, the failed-login back-off.
//! - [`migrate`]: stores from before account ids are migrated, idempotently.
//!
//! Hashing uses cheap argon2id parameters ([`CHEAP`]) except where a test
//! checks the OWASP default, so the suite stays fast.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ifmatch::accounts::{Accounts, AccountsConfig, HashParams};
use ifmatch::clock::{ManualClock, SharedRng};
use ifmatch::retry::RetryPolicy;
use ifmatch::store::{DynStore, PutOptions};

#[path = "../common/backends.rs"]
mod backends;
mod behaviour;
#[path = "../common/hooked.rs"]
mod hooked;
mod identity;
mod legacy;
mod migrate;
mod seed_5_1;
mod seed_5_2;
mod seed_5_3;

use hooked::{Hook, Hooked, Write};

/// Cheap argon2id parameters for tests (the production default is OWASP's).
pub const CHEAP: HashParams = HashParams::new(64, 1, 1);

/// The time the fixture's clock starts at: 2026-01-15T12:34:56Z.
pub fn start_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_768_480_496)
}

/// Accounts on one store, with a manual clock for the timestamps.
pub struct Fixture {
    pub accounts: Accounts,
    pub clock: ManualClock,
    pub store: DynStore,
}

/// Accounts on `store` with cheap hashing, a manual clock and a retry
/// policy on its own manual clock (backoffs do not sleep, nor move the timestamps).
pub fn fixture(store: &DynStore) -> Fixture {
    fixture_with(store, CHEAP)
}

/// [`fixture`] with the given hash parameters.
pub fn fixture_with(store: &DynStore, hash: HashParams) -> Fixture {
    let clock = ManualClock::new(start_time());
    let retry = RetryPolicy::default()
        .with_clock(Arc::new(ManualClock::new(UNIX_EPOCH)))
        .with_rng(SharedRng::seeded(3));
    let config = AccountsConfig::default()
        .with_hash_params(hash)
        .with_clock(Arc::new(clock.clone()))
        .with_retry(retry);
    Fixture {
        accounts: Accounts::new(store.clone(), config).expect("accounts"),
        clock,
        store: store.clone(),
    }
}

/// The raw stored record of `username` (already folded), as JSON; `None` if absent.
pub async fn raw(store: &DynStore, username: &str) -> Option<serde_json::Value> {
    match store.get(&format!("accounts/{username}")).await {
        Ok(o) => Some(serde_json::from_slice(&o.body).expect("stored record is JSON")),
        Err(ifmatch::Error::NotFound { .. }) => None,
        Err(e) => panic!("reading accounts/{username}: {e}"),
    }
}

/// The stored password hash of `username`.
pub async fn stored_hash(store: &DynStore, username: &str) -> String {
    raw(store, username).await.expect("record exists")["password_hash"]
        .as_str()
        .expect("password_hash is a string")
        .to_string()
}

/// `inner`, where just before the first put to `key` "another worker"
/// writes `intrude` there: the put that follows is then racing and loses.
/// The flag tells whether the intrusion happened.
pub fn racing(inner: &DynStore, key: &str, intrude: Bytes) -> (DynStore, Arc<AtomicBool>) {
    let pending = Arc::new(Mutex::new(Some(intrude)));
    let happened = Arc::new(AtomicBool::new(false));
    let (store, key, flag) = (inner.clone(), key.to_string(), happened.clone());
    let hook: Hook = Arc::new(move |k, write| {
        let other = if write == Write::Put && k == key {
            pending.lock().unwrap().take()
        } else {
            None
        };
        let (store, k, flag) = (store.clone(), k.to_string(), flag.clone());
        Box::pin(async move {
            if let Some(other) = other {
                store.put(&k, other, PutOptions::any()).await.unwrap();
                flag.store(true, Ordering::SeqCst);
            }
        })
    });
    (Hooked::new(inner.clone(), hook), happened)
}

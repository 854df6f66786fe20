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

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use ifmatch::accounts::{Accounts, AccountsConfig, HashParams};
use ifmatch::clock::{ManualClock, SharedRng};
use ifmatch::retry::RetryPolicy;
use ifmatch::store::{
    Condition, DynStore, Fetch, ListPage, ListResult, Object, ObjectMeta, PutOptions, Store,
    Version,
};

#[path = "../common/backends.rs"]
mod backends;
mod behaviour;
mod identity;
mod legacy;
mod migrate;
mod seed_5_1;
mod seed_5_2;
mod seed_5_3;

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

/// A store that, just before the first write to `key`, lets "another worker"
/// write `intrude` there: the write that follows is then racing and loses.
#[derive(Debug)]
pub struct RacingStore {
    pub inner: DynStore,
    pub key: String,
    pub intrude: Mutex<Option<Bytes>>,
}

#[async_trait]
impl Store for RacingStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn get(&self, key: &str) -> ifmatch::Result<Object> {
        self.inner.get(key).await
    }
    async fn get_if_changed(&self, key: &str, known: &Version) -> ifmatch::Result<Fetch> {
        self.inner.get_if_changed(key, known).await
    }
    async fn head(&self, key: &str) -> ifmatch::Result<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> ifmatch::Result<Version> {
        let intrude = if key == self.key {
            self.intrude.lock().unwrap().take()
        } else {
            None
        };
        if let Some(other) = intrude {
            self.inner.put(key, other, PutOptions::any()).await?;
        }
        self.inner.put(key, body, opts).await
    }
    async fn delete(&self, key: &str, condition: Condition) -> ifmatch::Result<()> {
        self.inner.delete(key, condition).await
    }
    async fn list(&self, prefix: &str, page: ListPage) -> ifmatch::Result<ListResult> {
        self.inner.list(prefix, page).await
    }
}

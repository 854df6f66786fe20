//! Accounts: users with an immutable account id, a conditional create,
//! argon2id password hashes, a failed-login back-off and paginated listing,
//! on any [`Store`](crate::Store) (seed 003, day 5).
//!
//! [`Accounts`] keeps one JSON record per account at `accounts/<username>`,
//! in a namespace of its own (listing accounts never pages through user
//! data). Every write is conditional: a new account is one create-if-absent
//! write (so two workers registering the same name at once cannot both
//! win), and changes go through the [update loop](crate::update), which
//! writes with `If-Match` and re-applies the change if someone else wrote first.
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use ifmatch::accounts::{Accounts, AccountsConfig, HashParams, UserUpdate};
//!
//! let store = ifmatch::store::open("memory://").await?;
//! // Tests and examples may use cheap hashing; the default is OWASP's argon2id.
//! let config = AccountsConfig::default().with_hash_params(HashParams::new(64, 1, 1));
//! let accounts = Accounts::new(store, config)?;
//!
//! let created = accounts.create("Alice", "Alice Smith", "correct horse").await?;
//! let alice = accounts.authenticate("alice", "correct horse").await?;
//! assert_eq!((alice.username.as_str(), &alice.id), ("alice", &created.id));
//! // Her own data lives under her account id, never under her name.
//! assert_eq!(alice.data_prefix(), format!("users/{}/", alice.id));
//! accounts.update("alice", UserUpdate::password("battery staple")).await?;
//! assert!(accounts.authenticate("alice", "correct horse").await.is_err());
//! assert!(accounts.delete("alice").await?);
//! // The name is free again, but a new account gets a new id.
//! let again = accounts.create("alice", "Another Alice", "correct horse").await?;
//! assert_ne!(again.id, created.id);
//! # Ok::<(), ifmatch::accounts::AccountsError>(()) }).unwrap();
//! ```
//!
//! ## Identity
//!
//! Every account gets an **account id** when it is created: `u` followed by
//! 32 random hex digits from the operating system's generator. The id never
//! changes and is never given to another account. Everything that belongs to
//! a user is keyed by it, not by the username: their objects, leases and
//! idempotency keys live under [`User::data_prefix`] (`users/<id>/`) and
//! their tenant database is named by the id. A deleted account's name can be
//! registered again; the new account gets a new id and reaches none of the
//! old one's data (which stays, under the old id, for the operator).
//!
//! Accounts migrated from format 1 (see below) keep their username as their
//! id, so their data stays where it was. A generated id is 33 characters,
//! one more than the longest username, so it can never equal a migrated one.
//!
//! Every change to an account ([`Accounts::update`],
//! [`Accounts::change_password`]) increments its **revision**. A session
//! records the revision it was granted at ([`User::revision`], as read when
//! the password was checked) and is valid only while the account still has
//! that revision: any change to the account ends every earlier session,
//! including one whose login raced the change. (A hash upgrade at login is
//! not a change: the password is the same.)
//!
//! ## Rules
//!
//! - **Usernames** are 3–32 characters of `a-z`, `0-9`, `_`, `.` and `-`,
//!   starting with a letter or a digit. ASCII letters are folded to lowercase
//!   before anything else, so `Alice` and `alice` are the same account; other
//!   characters (including non-ASCII letters) are refused. The rules also
//!   keep every username a safe key segment.
//! - **Passwords** are at least 8 characters (Unicode scalar values) and at
//!   most 1024 bytes of UTF-8, which bounds what one login can make the
//!   server hash. They are used byte for byte: no trimming, no normalisation.
//!   [`Accounts::authenticate`] enforces only the maximum, so passwords set
//!   under older rules still work.
//! - **Display names** are at most 256 characters without control characters
//!   (they may be empty).
//!
//! Each broken rule is its own [`AccountsError`] variant naming the rule.
//!
//! ## Password hashes
//!
//! New hashes are argon2id in PHC format with OWASP's parameters
//! ([`HashParams::OWASP`]: 19 MiB of memory, 2 passes, 1 lane) and a random
//! 16-byte salt from the operating system. Hashes from older systems in
//! bcrypt's modular-crypt format (`$2a$`, `$2b$`, `$2y$`, as in seed 003's
//! users table) still verify, and so do argon2 hashes with other parameters;
//! after a successful login such a hash is replaced by a fresh argon2id hash
//! with the current parameters. That upgrade is one conditional write against
//! the version that was verified: if anything changed the record in between
//! (a password change, a concurrent login doing the same upgrade) the upgrade
//! is skipped, which is harmless: the login already succeeded, the other
//! write wins, and the next login tries again. Like seed 003's bcrypt, a
//! bcrypt hash only ever looked at the first 72 bytes of a password.
//!
//! Hashes never leave this module: [`User`] has no hash, errors never quote
//! one, and the record type is private.
//!
//! Hashing and verification run on a bounded pool of dedicated threads, not
//! on tokio's blocking pool (which the file store and tenant databases need):
//! [`AccountsConfig::hash_workers`] threads (default: one per CPU, at most
//! [`MAX_DEFAULT_WORKERS`]) behind a queue of [`AccountsConfig::hash_queue`]
//! jobs (default: eight per thread).
//! When the queue is full a request is refused at once with
//! [`AccountsError::Busy`] (an HTTP server answers 429 with `Retry-After`),
//! so memory stays at `workers x` [`HashParams::memory_kib`] however many
//! requests arrive, and a queued job waits at most `queue / workers` hash
//! times. A job whose caller went away (a dropped request) is skipped.
//!
//! ## Failed logins
//!
//! [`Accounts::login`] (and [`Accounts::change_password`]) count failures
//! per username and per client address and refuse, before hashing anything,
//! during an exponential back-off ([`AccountsError::Throttled`]); the
//! schedule and its defaults are in [`ThrottleConfig`].
//! [`Accounts::authenticate`] itself is not throttled: it is for callers
//! that throttle on their own.
//!
//! ## Timing
//!
//! [`Accounts::authenticate`] answers [`AccountsError::InvalidCredentials`]
//! for a wrong password, an unknown user and a username that breaks the rules
//! alike, and costs the same in each case: when there is no hash to check it
//! verifies the password against a fixed dummy argon2id hash with the
//! configured parameters. (A user whose hash is still bcrypt or has outdated
//! parameters costs what that hash costs until their next login upgrades it.)
//!
//! ## Record format
//!
//! The value at `accounts/<username>` is a JSON object:
//!
//! ```json
//! {
//!   "format": 2,
//!   "id": "u5f0c2b9e8d7a41f6b3c2d1e0f9a8b7c6",
//!   "username": "alice",
//!   "name": "Alice Smith",
//!   "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>",
//!   "revision": 1,
//!   "created_at": "2026-01-15T12:34:56.789Z",
//!   "updated_at": "2026-01-15T12:34:56.789Z"
//! }
//! ```
//!
//! - `format` is [`RECORD_FORMAT`]. A record with a higher format is refused
//!   ([`AccountsError::UnsupportedFormat`]) and never rewritten, so an older
//!   worker cannot strip fields a newer one added.
//! - `id` is the account id, `revision` the change counter (see "Identity").
//! - `username` is the folded username, the same as in the key.
//! - `created_at` and `updated_at` are RFC 3339 timestamps in UTC with
//!   milliseconds, from the configured [`Clock`](crate::clock::Clock).
//!   `updated_at` changes with every [`Accounts::update`] (a hash upgrade at
//!   login leaves it alone). When reading, offsets and ISO 8601 timestamps
//!   without a zone (read as UTC, as Python's `isoformat()` writes them) are
//!   accepted too, and a missing `updated_at` is taken to be `created_at`.
//!
//! ## Format 1, and migrating it
//!
//! Before account ids, records had format 1 (no `id`, no `revision`; a
//! missing `format` also means 1, which is the shape of seed 003's DynamoDB
//! items) and lived at `users/<username>`, next to the users' data.
//! [`Accounts::migrate_legacy`] (`ifmatch user migrate`) moves each of them
//! to `accounts/<username>` with the username as its account id (so the
//! account keeps its data, its tenant database and its `users/<username>/`
//! prefix) and then deletes the old record, conditionally on the version it
//! copied. It is idempotent: run it again after an interruption and it
//! finishes the job; an account already moved is not touched again. Until it
//! has run, an old account cannot log in, and its name cannot be registered
//! by someone else ([`Accounts::create`] checks `users/<username>` too).
//! Sessions from before the migration end (they carry no revision). To
//! import seed 003's users, write their items to `users/<username>` and run
//! the migration.

mod error;
mod hashing;
mod migrate;
mod record;
mod rules;
mod throttle;
mod timefmt;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use futures::StreamExt;

use crate::clock::{DynClock, SystemClock};
use crate::error::{BoxError, Error};
use crate::retry::RetryPolicy;
use crate::store::{DynStore, ListPage, Version};
use crate::update::{Decision, update};

pub use error::AccountsError;
pub use hashing::{HashParams, MAX_DEFAULT_WORKERS};
pub use migrate::MigrationReport;
pub use record::{
    ACCOUNT_ID_LEN, DATA_PREFIX, KEY_PREFIX, LEGACY_KEY_PREFIX, LEGACY_RECORD_FORMAT,
    RECORD_FORMAT, data_prefix, is_account_id,
};
pub use rules::{
    NAME_MAX_CHARS, PASSWORD_MAX_BYTES, PASSWORD_MIN_CHARS, USERNAME_MAX_LEN, USERNAME_MIN_LEN,
    normalize_username, validate_name, validate_password,
};
pub use throttle::{Backoff, ThrottleConfig};

use hashing::{HashPool, Hasher};
use record::{Record, key_of, legacy_key_of, new_account_id};
use rules::check_password_max;
use throttle::LoginThrottle;

/// The largest page [`Accounts::list`] returns.
pub const MAX_PAGE_LIMIT: usize = 1000;

/// How many records [`Accounts::list`] reads at once.
const LIST_CONCURRENCY: usize = 8;

/// Settings of [`Accounts`]: hashing cost and capacity, login back-off,
/// clock and retry budget.
#[derive(Clone, Debug)]
pub struct AccountsConfig {
    /// The argon2id parameters of new hashes (default [`HashParams::OWASP`]).
    /// Tests set cheap ones to stay fast; production should keep the default.
    pub hash: HashParams,
    /// How many hashes run at once, each on its own dedicated thread
    /// (default: the number of CPUs, at most [`MAX_DEFAULT_WORKERS`]). Each
    /// takes [`HashParams::memory_kib`].
    pub hash_workers: usize,
    /// How many hashes may wait for a thread (default: eight per thread);
    /// beyond that a request gets [`AccountsError::Busy`] at once.
    pub hash_queue: usize,
    /// The failed-login back-off of [`Accounts::login`].
    pub throttle: ThrottleConfig,
    /// The clock behind `created_at`, `updated_at` and the back-off (default: the system clock).
    pub clock: DynClock,
    /// The retry budget of reads and of the update loop.
    pub retry: RetryPolicy,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        let workers = hashing::default_workers();
        AccountsConfig {
            hash: HashParams::OWASP,
            hash_workers: workers,
            hash_queue: workers * 8,
            throttle: ThrottleConfig::default(),
            clock: SystemClock::shared(),
            retry: RetryPolicy::default(),
        }
    }
}

impl AccountsConfig {
    /// Sets the argon2id parameters of new hashes.
    pub fn with_hash_params(mut self, hash: HashParams) -> Self {
        self.hash = hash;
        self
    }
    /// Sets the number of hashing threads (at least 1) and the queue in front of them.
    pub fn with_hash_capacity(mut self, workers: usize, queue: usize) -> Self {
        self.hash_workers = workers.max(1);
        self.hash_queue = queue;
        self
    }
    /// Sets the failed-login back-off.
    pub fn with_throttle(mut self, throttle: ThrottleConfig) -> Self {
        self.throttle = throttle;
        self
    }
    /// Sets the clock behind the timestamps and the back-off.
    pub fn with_clock(mut self, clock: DynClock) -> Self {
        self.clock = clock;
        self
    }
    /// Sets the retry budget.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// An account as the outside world sees it: everything but the password hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The account id: immutable, never reused (see the module docs).
    pub id: String,
    /// The username, folded to lowercase.
    pub username: String,
    /// The display name.
    pub name: String,
    /// The change counter: a session is valid only at the revision it was granted at.
    pub revision: u64,
    /// When the account was created.
    pub created_at: SystemTime,
    /// When the name or password last changed (the creation time if never).
    pub updated_at: SystemTime,
}

impl User {
    /// The key prefix of this account's own objects, leases and idempotency
    /// keys: `users/<id>/`.
    pub fn data_prefix(&self) -> String {
        data_prefix(&self.id)
    }
}

/// A change to a user: a new display name, a new password, or both.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UserUpdate {
    /// The new display name, if it changes.
    pub name: Option<String>,
    /// The new password, if it changes.
    pub password: Option<String>,
}

impl UserUpdate {
    /// Changes only the display name.
    pub fn name(name: impl Into<String>) -> Self {
        UserUpdate {
            name: Some(name.into()),
            password: None,
        }
    }
    /// Changes only the password.
    pub fn password(password: impl Into<String>) -> Self {
        UserUpdate {
            name: None,
            password: Some(password.into()),
        }
    }
}

impl fmt::Debug for UserUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserUpdate")
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// One page of [`Accounts::list`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserPage {
    /// The users of this page, in username order (DynamoDB: in its scan order).
    pub users: Vec<User>,
    /// The opaque token of the next page; `None` when this is the last one.
    pub next: Option<String>,
}

/// Formats a time as RFC 3339 in UTC with milliseconds, as account records store it.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let t = UNIX_EPOCH + Duration::from_millis(1_768_480_496_789);
/// assert_eq!(ifmatch::accounts::rfc3339(t), "2026-01-15T12:34:56.789Z");
/// ```
pub fn rfc3339(t: SystemTime) -> String {
    timefmt::format(t)
}

/// User accounts on a [`Store`](crate::Store); see the module docs.
///
/// Cheap to clone (clones share the hashing threads and the login back-off);
/// every operation is safe to run from any number of workers at once.
#[derive(Clone, Debug)]
pub struct Accounts {
    store: DynStore,
    config: AccountsConfig,
    hasher: Arc<Hasher>,
    pool: Arc<HashPool>,
    throttle: Arc<LoginThrottle>,
}

impl Accounts {
    /// Accounts on `store` with `config`; starts the hashing threads.
    ///
    /// Fails if the hash parameters are out of range or a thread cannot be
    /// started. With parameters other than [`HashParams::OWASP`] it computes
    /// one hash (the dummy used for unknown users), so keep one `Accounts`
    /// rather than making one per request.
    pub fn new(store: DynStore, config: AccountsConfig) -> Result<Accounts, AccountsError> {
        let hasher = Hasher::new(config.hash)?;
        let pool = HashPool::start(config.hash_workers, config.hash_queue)?;
        let throttle = LoginThrottle::new(config.throttle, config.clock.clone());
        Ok(Accounts {
            store,
            config,
            hasher: Arc::new(hasher),
            pool: Arc::new(pool),
            throttle: Arc::new(throttle),
        })
    }

    /// The store the records live in.
    pub fn store(&self) -> &DynStore {
        &self.store
    }

    /// The settings in use.
    pub fn config(&self) -> &AccountsConfig {
        &self.config
    }

    /// Creates an account with a fresh account id, only if the (folded)
    /// username is free.
    ///
    /// One create-if-absent write decides: of any number of concurrent
    /// creates of one username exactly one succeeds, the others get
    /// [`AccountsError::UserAlreadyExists`]. (The write goes through the
    /// update loop, so a lost response is settled by its write id instead of
    /// being mistaken for someone else's account.) A username that still has
    /// a format-1 record at `users/<username>` (not yet migrated) is taken too.
    pub async fn create(
        &self,
        username: &str,
        name: &str,
        password: &str,
    ) -> Result<User, AccountsError> {
        let username = normalize_username(username)?;
        validate_name(name)?;
        validate_password(password)?;
        if self.exists(&legacy_key_of(&username)).await? {
            tracing::warn!(
                username,
                "a format-1 account record exists: run `ifmatch user migrate`"
            );
            return Err(AccountsError::UserAlreadyExists { username });
        }
        let hash = self.hash(password).await?;
        let now = self.config.clock.now();
        let record = Record {
            id: new_account_id(),
            username: username.clone(),
            name: name.to_string(),
            password_hash: hash,
            revision: 1,
            created_at: now,
            updated_at: now,
        };
        let body = record.to_bytes()?;
        let key = key_of(&username);
        update(&*self.store, &key, &self.config.retry, |current| {
            if current.is_some() {
                return Err(BoxError::from(AccountsError::UserAlreadyExists {
                    username: username.clone(),
                }));
            }
            Ok(Decision::write(body.clone()))
        })
        .await?;
        Ok(record.user())
    }

    /// The user, or `None` if there is none by that name.
    ///
    /// A username that breaks the rules is an error, not `None`.
    pub async fn get(&self, username: &str) -> Result<Option<User>, AccountsError> {
        let username = normalize_username(username)?;
        Ok(self.read(&username).await?.map(|(record, _)| record.user()))
    }

    /// Checks a password and returns the user as read for the check (its
    /// [`User::revision`] is the one a session should be bound to).
    ///
    /// A wrong password, an unknown user and a username that breaks the rules
    /// all give [`AccountsError::InvalidCredentials`] at the same cost (see
    /// the module docs); a password over [`PASSWORD_MAX_BYTES`] is refused
    /// with [`AccountsError::PasswordTooLong`] before any hashing. On
    /// success, a bcrypt hash or an argon2 hash with outdated parameters is
    /// upgraded with a conditional write; losing that race to another write
    /// is harmless and ignored. Not throttled: see [`Accounts::login`].
    pub async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<User, AccountsError> {
        let (record, version) = self.verify(username, password).await?;
        if self.hasher.needs_upgrade(&record.password_hash) {
            self.upgrade(&record, version, password).await;
        }
        Ok(record.user())
    }

    /// [`Accounts::authenticate`] behind the failed-login back-off: refused
    /// with [`AccountsError::Throttled`], before any hashing, while the
    /// username or `client`'s address is in its back-off; a failure counts
    /// against both, a success clears the username's count (see [`ThrottleConfig`]).
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<User, AccountsError> {
        self.throttle.check(username, client)?;
        let result = self.authenticate(username, password).await;
        self.count_attempt(username, client, &result);
        result
    }

    /// Changes a user's own password: checks `old` (behind the same back-off
    /// as [`Accounts::login`]), then writes the hash of `new` only if the
    /// account has not changed since the check ([`AccountsError::AccountChanged`]
    /// otherwise). The revision goes up, which ends every session bound to
    /// the old one.
    pub async fn change_password(
        &self,
        username: &str,
        old: &str,
        new: &str,
        client: Option<IpAddr>,
    ) -> Result<User, AccountsError> {
        validate_password(new)?;
        self.throttle.check(username, client)?;
        let verified = self.verify(username, old).await;
        self.count_attempt(username, client, &verified);
        let (record, version) = verified?;
        let hash = self.hash(new).await?;
        let now = self.config.clock.now();
        let mut changed = record.clone();
        changed.password_hash = hash;
        changed.revision += 1;
        changed.updated_at = now;
        let body = changed.to_bytes()?;
        update(
            &*self.store,
            &key_of(&record.username),
            &self.config.retry,
            |current| match current {
                Some(o) if o.meta.version == version => Ok(Decision::write(body.clone())),
                _ => Err(BoxError::from(AccountsError::AccountChanged {
                    username: record.username.clone(),
                })),
            },
        )
        .await?;
        Ok(changed.user())
    }

    /// Counts a login attempt's outcome in the back-off.
    fn count_attempt<T>(
        &self,
        username: &str,
        client: Option<IpAddr>,
        result: &Result<T, AccountsError>,
    ) {
        match result {
            Ok(_) => self.throttle.success(username),
            Err(AccountsError::InvalidCredentials) => self.throttle.failure(username, client),
            Err(_) => {}
        }
    }

    /// Reads the account and checks `password` against it: the record and
    /// the version that was verified, or [`AccountsError::InvalidCredentials`].
    async fn verify(
        &self,
        username: &str,
        password: &str,
    ) -> Result<(Record, Version), AccountsError> {
        check_password_max(password)?;
        let found = match normalize_username(username) {
            Ok(username) => self.read(&username).await?,
            Err(_) => None,
        };
        let hasher = self.hasher.clone();
        let pw = password.as_bytes().to_vec();
        let Some((record, version)) = found else {
            self.pool
                .run(move || {
                    hasher.verify_dummy(&pw);
                    Ok(())
                })
                .await?;
            return Err(AccountsError::InvalidCredentials);
        };
        let (hash, key) = (record.password_hash.clone(), key_of(&record.username));
        if self
            .pool
            .run(move || hasher.verify(&key, &hash, &pw))
            .await?
        {
            Ok((record, version))
        } else {
            Err(AccountsError::InvalidCredentials)
        }
    }

    /// Replaces an old hash after a successful login, if the record is still
    /// at the version that was verified. Never fails the login.
    async fn upgrade(&self, record: &Record, verified: Version, password: &str) {
        let key = key_of(&record.username);
        let key = key.as_str();
        let hash = match self.hash(password).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(key, error = %e, "password hash upgrade skipped");
                return;
            }
        };
        let mut upgraded = record.clone();
        upgraded.password_hash = hash;
        let body = match upgraded.to_bytes() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(key, error = %e, "password hash upgrade skipped");
                return;
            }
        };
        let result = update(&*self.store, key, &self.config.retry, |current| {
            // Only over the version whose hash was verified: anything newer
            // (a password change, another login's upgrade) wins.
            match current {
                Some(o) if o.meta.version == verified => Ok(Decision::write(body.clone())),
                _ => Ok(Decision::Keep),
            }
        })
        .await;
        match result {
            Ok(u) if u.changed => tracing::debug!(key, "password hash upgraded to argon2id"),
            Ok(_) => tracing::debug!(key, "password hash upgrade lost a race; skipped"),
            Err(e) => tracing::warn!(key, error = %e, "password hash upgrade failed"),
        }
    }

    /// Changes a user's display name and/or password, through the update
    /// loop; the revision goes up (ending the user's sessions).
    ///
    /// The new password is hashed once; the change is then applied to the
    /// latest record with a conditional write, re-applied if another writer
    /// got there first. [`AccountsError::UserNotFound`] if there is no such
    /// user. An empty update changes nothing and returns the user.
    pub async fn update(&self, username: &str, changes: UserUpdate) -> Result<User, AccountsError> {
        let username = normalize_username(username)?;
        if let Some(name) = &changes.name {
            validate_name(name)?;
        }
        if let Some(password) = &changes.password {
            validate_password(password)?;
        }
        if changes.name.is_none() && changes.password.is_none() {
            return self
                .read(&username)
                .await?
                .map(|(r, _)| r.user())
                .ok_or(AccountsError::UserNotFound { username });
        }
        let hash = match &changes.password {
            Some(p) => Some(self.hash(p).await?),
            None => None,
        };
        let now = self.config.clock.now();
        let key = key_of(&username);
        let mut last: Option<Record> = None;
        update(&*self.store, &key, &self.config.retry, |current| {
            let Some(current) = current else {
                return Err(BoxError::from(AccountsError::UserNotFound {
                    username: username.clone(),
                }));
            };
            let mut record = Record::parse(&key, &username, &current.body)?;
            if let Some(name) = &changes.name {
                record.name = name.clone();
            }
            if let Some(hash) = &hash {
                record.password_hash = hash.clone();
            }
            record.revision += 1;
            record.updated_at = now;
            let body = record.to_bytes()?;
            last = Some(record);
            Ok(Decision::write(body))
        })
        .await?;
        last.map(|r| r.user())
            .ok_or(AccountsError::UserNotFound { username })
    }

    /// Changes only the display name; see [`Accounts::update`].
    pub async fn set_name(&self, username: &str, name: &str) -> Result<User, AccountsError> {
        self.update(username, UserUpdate::name(name)).await
    }

    /// Changes only the password (an operator's reset); see [`Accounts::update`].
    pub async fn set_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<User, AccountsError> {
        self.update(username, UserUpdate::password(password)).await
    }

    /// Deletes an account: `true` if one was deleted, `false` if there was none.
    ///
    /// The delete is conditional on the version read, through the update
    /// loop. The account's data stays under its id (see the module docs):
    /// no later account can reach it.
    pub async fn delete(&self, username: &str) -> Result<bool, AccountsError> {
        let username = normalize_username(username)?;
        let updated = update(
            &*self.store,
            &key_of(&username),
            &self.config.retry,
            |current| {
                Ok(match current {
                    Some(_) => Decision::Delete,
                    None => Decision::Keep,
                })
            },
        )
        .await?;
        Ok(updated.changed)
    }

    /// One page of at most `limit` users (1 to [`MAX_PAGE_LIMIT`]), starting
    /// after `token` (`None` for the first page; then [`UserPage::next`]).
    ///
    /// Users deleted between the listing and the read are left out, so a
    /// page may hold fewer than `limit` users: only `next == None` means the end.
    pub async fn list(&self, token: Option<&str>, limit: usize) -> Result<UserPage, AccountsError> {
        if !(1..=MAX_PAGE_LIMIT).contains(&limit) {
            return Err(AccountsError::InvalidPageLimit {
                limit,
                max: MAX_PAGE_LIMIT,
            });
        }
        let page = self
            .config
            .retry
            .run(|| {
                self.store.list(
                    KEY_PREFIX,
                    ListPage {
                        token: token.map(str::to_string),
                        limit,
                    },
                )
            })
            .await?;
        let usernames: Vec<String> = page
            .entries
            .iter()
            .filter_map(|e| e.key.strip_prefix(KEY_PREFIX))
            // Keys below accounts/ that are not an account's record are not ours.
            .filter(|u| normalize_username(u).ok().as_deref() == Some(*u))
            .map(str::to_string)
            .collect();
        let records: Vec<Result<Option<(Record, Version)>, AccountsError>> =
            futures::stream::iter(usernames)
                .map(|u| async move { self.read(&u).await })
                .buffered(LIST_CONCURRENCY)
                .collect()
                .await;
        let mut users = Vec::with_capacity(records.len());
        for r in records {
            if let Some((record, _)) = r? {
                users.push(record.user());
            }
        }
        Ok(UserPage {
            users,
            next: page.next,
        })
    }

    /// Every user, following [`Accounts::list`] pages (for small user sets, like a CLI's `ls`).
    pub async fn list_all(&self) -> Result<Vec<User>, AccountsError> {
        let mut users = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.list(token.as_deref(), MAX_PAGE_LIMIT).await?;
            users.extend(page.users);
            match page.next {
                Some(t) => token = Some(t),
                None => return Ok(users),
            }
        }
    }

    /// Reads a key, retrying transient errors; `None` if absent.
    async fn fetch(&self, key: &str) -> Result<Option<crate::Object>, AccountsError> {
        Ok(self
            .config
            .retry
            .run(|| async {
                match self.store.get(key).await {
                    Ok(o) => Ok(Some(o)),
                    Err(Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?)
    }

    /// Whether a key exists.
    async fn exists(&self, key: &str) -> Result<bool, AccountsError> {
        Ok(self.fetch(key).await?.is_some())
    }

    /// Reads and parses a (folded) user's record with its version; `None` if absent.
    async fn read(&self, username: &str) -> Result<Option<(Record, Version)>, AccountsError> {
        let key = key_of(username);
        match self.fetch(&key).await? {
            Some(o) => Ok(Some((
                Record::parse(&key, username, &o.body)?,
                o.meta.version,
            ))),
            None => Ok(None),
        }
    }

    /// Hashes a new password on the hashing pool.
    async fn hash(&self, password: &str) -> Result<String, AccountsError> {
        let hasher = self.hasher.clone();
        let password = password.as_bytes().to_vec();
        self.pool.run(move || hasher.hash(&password)).await
    }
}

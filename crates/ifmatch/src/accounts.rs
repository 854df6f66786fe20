//! Accounts: users with a conditional create, argon2id password hashes and
//! paginated listing, on any [`Store`](crate::Store) (seed 003, day 5).
//!
//! [`Accounts`] keeps one JSON record per user under `users/<username>`. Every
//! write is conditional: a new user is one create-if-absent write (so two
//! workers registering the same name at once cannot both win), and changes
//! go through the [update loop](crate::update), which writes with `If-Match`
//! and re-applies the change if someone else wrote first.
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
//! accounts.create("Alice", "Alice Smith", "correct horse").await?;
//! let alice = accounts.authenticate("alice", "correct horse").await?;
//! assert_eq!(alice.username, "alice");
//! accounts.update("alice", UserUpdate::password("battery staple")).await?;
//! assert!(accounts.authenticate("alice", "correct horse").await.is_err());
//! assert!(accounts.delete("alice").await?);
//! # Ok::<(), ifmatch::accounts::AccountsError>(()) }).unwrap();
//! ```
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
//! Hashing and verification run on tokio's blocking pool, so they do not
//! stall other tasks of the runtime.
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
//! The value at `users/<username>` is a JSON object:
//!
//! ```json
//! {
//!   "format": 1,
//!   "username": "alice",
//!   "name": "Alice Smith",
//!   "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>",
//!   "created_at": "2026-01-15T12:34:56.789Z",
//!   "updated_at": "2026-01-15T12:34:56.789Z"
//! }
//! ```
//!
//! - `format` is [`RECORD_FORMAT`]. A record with a higher format is refused
//!   ([`AccountsError::UnsupportedFormat`]) and never rewritten, so an older
//!   worker cannot strip fields a newer one added. A record without `format`
//!   is read as format 1: that is the shape of seed 003's DynamoDB items, so
//!   they can be copied in as they are.
//! - `username` is the folded username, the same as in the key.
//! - `created_at` and `updated_at` are RFC 3339 timestamps in UTC with
//!   milliseconds, from the configured [`Clock`](crate::clock::Clock).
//!   `updated_at` changes with every [`Accounts::update`] (a hash upgrade at
//!   login leaves it alone). When reading, offsets and ISO 8601 timestamps
//!   without a zone (read as UTC, as Python's `isoformat()` writes them) are
//!   accepted too, and a missing `updated_at` is taken to be `created_at`.

use std::fmt;
use std::time::SystemTime;

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, PasswordHasher, PasswordVerifier};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::clock::{DynClock, SystemClock};
use crate::error::{BoxError, Error, ErrorKind};
use crate::retry::RetryPolicy;
use crate::store::{DynStore, ListPage};
use crate::update::{Decision, UpdateError, update};

/// The prefix of every user record's key: a user lives at `users/<username>`.
pub const KEY_PREFIX: &str = "users/";

/// The format version written into every user record (see the module docs).
pub const RECORD_FORMAT: u32 = 1;

/// The shortest username, in characters.
pub const USERNAME_MIN_LEN: usize = 3;
/// The longest username, in characters.
pub const USERNAME_MAX_LEN: usize = 32;
/// The shortest password accepted when one is set, in characters.
pub const PASSWORD_MIN_CHARS: usize = 8;
/// The longest password accepted anywhere, in bytes of UTF-8.
pub const PASSWORD_MAX_BYTES: usize = 1024;
/// The longest display name, in characters.
pub const NAME_MAX_CHARS: usize = 256;
/// The largest page [`Accounts::list`] returns.
pub const MAX_PAGE_LIMIT: usize = 1000;

/// How many records [`Accounts::list`] reads at once.
const LIST_CONCURRENCY: usize = 8;

/// The password behind the dummy hashes; no account can have it, since a
/// dummy hash is never compared with a result that lets anyone in.
const DUMMY_PASSWORD: &[u8] = b"ifmatch-accounts-dummy-password";
/// The fixed salt of the dummy hashes.
const DUMMY_SALT: &[u8] = b"ifmatch-dummy-16";
/// The dummy hash for [`HashParams::OWASP`]: `DUMMY_PASSWORD` under `DUMMY_SALT`.
const DUMMY_HASH_OWASP: &str = "$argon2id$v=19$m=19456,t=2,p=1$aWZtYXRjaC1kdW1teS0xNg$54jZt7Z4k6TNhsCkeDerghmliEfUMvDyiwFgK/QP8bk";

/// The argon2id cost parameters used for new hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HashParams {
    /// Memory in KiB (`m`); at least 8 per lane.
    pub memory_kib: u32,
    /// Passes over the memory (`t`); at least 1.
    pub iterations: u32,
    /// Lanes (`p`); at least 1.
    pub parallelism: u32,
}

impl HashParams {
    /// OWASP's recommendation for argon2id: m=19456 KiB, t=2, p=1. The default.
    pub const OWASP: HashParams = HashParams::new(19456, 2, 1);

    /// Parameters `m` (KiB), `t` and `p`; checked by [`Accounts::new`].
    ///
    /// Anything cheaper than [`HashParams::OWASP`] is for tests only.
    pub const fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Self {
        HashParams {
            memory_kib,
            iterations,
            parallelism,
        }
    }

    fn to_argon2(self) -> Result<argon2::Params, AccountsError> {
        argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, None).map_err(|e| {
            AccountsError::InvalidHashParams(format!(
                "m={}, t={}, p={}: {e}",
                self.memory_kib, self.iterations, self.parallelism
            ))
        })
    }
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams::OWASP
    }
}

/// Settings of [`Accounts`]: hashing cost, clock and retry budget.
#[derive(Clone, Debug)]
pub struct AccountsConfig {
    /// The argon2id parameters of new hashes (default [`HashParams::OWASP`]).
    /// Tests set cheap ones to stay fast; production should keep the default.
    pub hash: HashParams,
    /// The clock behind `created_at` and `updated_at` (default: the system clock).
    pub clock: DynClock,
    /// The retry budget of reads and of the update loop.
    pub retry: RetryPolicy,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            hash: HashParams::OWASP,
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
    /// Sets the clock behind the timestamps.
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

/// A user as the outside world sees it: everything but the password hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The username, folded to lowercase.
    pub username: String,
    /// The display name.
    pub name: String,
    /// When the user was created.
    pub created_at: SystemTime,
    /// When the name or password last changed (the creation time if never).
    pub updated_at: SystemTime,
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

/// What went wrong in an account operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountsError {
    /// Username rule: 3–32 characters.
    #[error(
        "username {username:?} is {len} characters long; a username must be {min}-{max} characters"
    )]
    UsernameLength {
        /// The username given (truncated if very long).
        username: String,
        /// Its length in characters.
        len: usize,
        /// [`USERNAME_MIN_LEN`].
        min: usize,
        /// [`USERNAME_MAX_LEN`].
        max: usize,
    },
    /// Username rule: only `a-z`, `0-9`, `_`, `.`, `-` (after folding ASCII to lowercase).
    #[error(
        "username {username:?} contains {ch:?}; a username may only contain a-z, 0-9, '_', '.' and '-' (letters are folded to lowercase)"
    )]
    UsernameCharacter {
        /// The username given (folded; truncated if very long).
        username: String,
        /// The first character not allowed.
        ch: char,
    },
    /// Username rule: the first character is a letter or a digit.
    #[error(
        "username {username:?} starts with {ch:?}; a username must start with a letter or a digit"
    )]
    UsernameStart {
        /// The username given (folded).
        username: String,
        /// Its first character.
        ch: char,
    },
    /// Password rule: at least [`PASSWORD_MIN_CHARS`] characters.
    #[error("password is too short: {len} characters; a password must have at least {min}")]
    PasswordTooShort {
        /// The password's length in characters.
        len: usize,
        /// [`PASSWORD_MIN_CHARS`].
        min: usize,
    },
    /// Password rule: at most [`PASSWORD_MAX_BYTES`] bytes.
    #[error("password is too long: {len} bytes; a password may have at most {max} bytes")]
    PasswordTooLong {
        /// The password's length in bytes.
        len: usize,
        /// [`PASSWORD_MAX_BYTES`].
        max: usize,
    },
    /// Display-name rule: at most [`NAME_MAX_CHARS`] characters.
    #[error("display name is {len} characters long; a display name may have at most {max}")]
    NameTooLong {
        /// The name's length in characters.
        len: usize,
        /// [`NAME_MAX_CHARS`].
        max: usize,
    },
    /// Display-name rule: no control characters.
    #[error(
        "display name contains the control character U+{code:04X}; control characters are not allowed"
    )]
    NameControlCharacter {
        /// The code point of the first control character.
        code: u32,
    },
    /// [`Accounts::create`]: the username is taken.
    #[error("user '{username}' already exists")]
    UserAlreadyExists {
        /// The (folded) username.
        username: String,
    },
    /// The user does not exist.
    #[error("user '{username}' not found")]
    UserNotFound {
        /// The (folded) username.
        username: String,
    },
    /// [`Accounts::authenticate`]: wrong password or unknown user; deliberately
    /// the same error for both.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// [`Accounts::list`]: the page limit is 0 or above [`MAX_PAGE_LIMIT`].
    #[error("page limit {limit} is out of range; it must be 1-{max}")]
    InvalidPageLimit {
        /// The limit given.
        limit: usize,
        /// [`MAX_PAGE_LIMIT`].
        max: usize,
    },
    /// [`Accounts::new`]: the argon2 parameters are out of range.
    #[error("invalid password hashing parameters {0}")]
    InvalidHashParams(String),
    /// A stored user record cannot be read (bad JSON, bad timestamp, unknown hash scheme).
    #[error("user record '{key}' is unreadable: {reason}")]
    CorruptRecord {
        /// The record's key.
        key: String,
        /// What is wrong (never the hash itself).
        reason: String,
    },
    /// A stored user record has a newer format than this code knows; it is left alone.
    #[error(
        "user record '{key}' has format {found}; this version of ifmatch reads formats up to {supported}"
    )]
    UnsupportedFormat {
        /// The record's key.
        key: String,
        /// The format found.
        found: u32,
        /// [`RECORD_FORMAT`].
        supported: u32,
    },
    /// Hashing failed (the system's random source, or the blocking pool, failed).
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] Error),
    /// The update loop gave up (other writers kept winning, or an outcome stayed unknown).
    #[error(transparent)]
    Update(UpdateError),
}

impl AccountsError {
    /// The classification, for exit codes and HTTP statuses: rule violations
    /// are [`ErrorKind::Invalid`], an existing user [`ErrorKind::Conflict`],
    /// a missing one [`ErrorKind::NotFound`]. [`AccountsError::InvalidCredentials`]
    /// is [`ErrorKind::Other`]: match the variant to answer 401.
    pub fn kind(&self) -> ErrorKind {
        use AccountsError::*;
        match self {
            UsernameLength { .. }
            | UsernameCharacter { .. }
            | UsernameStart { .. }
            | PasswordTooShort { .. }
            | PasswordTooLong { .. }
            | NameTooLong { .. }
            | NameControlCharacter { .. }
            | InvalidPageLimit { .. }
            | InvalidHashParams(_) => ErrorKind::Invalid,
            UserAlreadyExists { .. } => ErrorKind::Conflict,
            UserNotFound { .. } => ErrorKind::NotFound,
            InvalidCredentials | CorruptRecord { .. } | UnsupportedFormat { .. } | Hashing(_) => {
                ErrorKind::Other
            }
            Store(e) => e.kind(),
            Update(e) => e.kind(),
        }
    }
}

impl From<UpdateError> for AccountsError {
    /// Unwraps an [`AccountsError`] that aborted the update loop; keeps anything else.
    fn from(e: UpdateError) -> Self {
        match e {
            UpdateError::Aborted { key, source } => match source.downcast::<AccountsError>() {
                Ok(inner) => *inner,
                Err(source) => AccountsError::Update(UpdateError::Aborted { key, source }),
            },
            UpdateError::Store(e) => AccountsError::Store(e),
            other => AccountsError::Update(other),
        }
    }
}

/// At most 64 characters of a rejected input, for error messages.
fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Folds `username` to lowercase and checks the username rules (see the module docs).
///
/// ```
/// use ifmatch::accounts::{normalize_username, AccountsError};
/// assert_eq!(normalize_username("Alice.Smith").unwrap(), "alice.smith");
/// assert!(matches!(normalize_username("al"), Err(AccountsError::UsernameLength { .. })));
/// assert!(matches!(normalize_username("al ice"), Err(AccountsError::UsernameCharacter { ch: ' ', .. })));
/// assert!(matches!(normalize_username("_alice"), Err(AccountsError::UsernameStart { .. })));
/// ```
pub fn normalize_username(username: &str) -> Result<String, AccountsError> {
    let folded = username.to_ascii_lowercase();
    let len = folded.chars().count();
    if !(USERNAME_MIN_LEN..=USERNAME_MAX_LEN).contains(&len) {
        return Err(AccountsError::UsernameLength {
            username: shown(username),
            len,
            min: USERNAME_MIN_LEN,
            max: USERNAME_MAX_LEN,
        });
    }
    let allowed =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.' || c == '-';
    if let Some(ch) = folded.chars().find(|c| !allowed(*c)) {
        return Err(AccountsError::UsernameCharacter {
            username: shown(&folded),
            ch,
        });
    }
    match folded.chars().next() {
        Some(ch) if !(ch.is_ascii_lowercase() || ch.is_ascii_digit()) => {
            Err(AccountsError::UsernameStart {
                username: folded.clone(),
                ch,
            })
        }
        _ => Ok(folded),
    }
}

/// Checks the password rules for a new password: 8 characters to 1024 bytes.
pub fn validate_password(password: &str) -> Result<(), AccountsError> {
    check_password_max(password)?;
    let len = password.chars().count();
    if len < PASSWORD_MIN_CHARS {
        return Err(AccountsError::PasswordTooShort {
            len,
            min: PASSWORD_MIN_CHARS,
        });
    }
    Ok(())
}

fn check_password_max(password: &str) -> Result<(), AccountsError> {
    if password.len() > PASSWORD_MAX_BYTES {
        return Err(AccountsError::PasswordTooLong {
            len: password.len(),
            max: PASSWORD_MAX_BYTES,
        });
    }
    Ok(())
}

/// Checks the display-name rules: at most 256 characters, no control characters.
pub fn validate_name(name: &str) -> Result<(), AccountsError> {
    let len = name.chars().count();
    if len > NAME_MAX_CHARS {
        return Err(AccountsError::NameTooLong {
            len,
            max: NAME_MAX_CHARS,
        });
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(AccountsError::NameControlCharacter { code: c as u32 });
    }
    Ok(())
}

/// The key of a (folded) username's record.
fn key_of(username: &str) -> String {
    format!("{KEY_PREFIX}{username}")
}

/// Formats a time as RFC 3339 in UTC with milliseconds, as user records store it.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let t = UNIX_EPOCH + Duration::from_millis(1_768_480_496_789);
/// assert_eq!(ifmatch::accounts::rfc3339(t), "2026-01-15T12:34:56.789Z");
/// ```
pub fn rfc3339(t: SystemTime) -> String {
    timefmt::format(t)
}

/// A user record as stored (see the module docs). Not public: it holds the hash.
#[derive(Serialize, Deserialize)]
struct StoredRecord {
    #[serde(default = "legacy_format")]
    format: u32,
    username: String,
    name: String,
    password_hash: String,
    created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated_at: Option<String>,
}

fn legacy_format() -> u32 {
    1
}

/// Just the format field, read before the rest so a newer record is refused cleanly.
#[derive(Deserialize)]
struct FormatProbe {
    #[serde(default = "legacy_format")]
    format: u32,
}

/// A parsed user record.
#[derive(Clone)]
struct Record {
    username: String,
    name: String,
    password_hash: String,
    created_at: SystemTime,
    updated_at: SystemTime,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("username", &self.username)
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Record {
    fn parse(key: &str, username: &str, body: &[u8]) -> Result<Record, AccountsError> {
        let corrupt = |reason: String| AccountsError::CorruptRecord {
            key: key.to_string(),
            reason,
        };
        let probe: FormatProbe = serde_json::from_slice(body)
            .map_err(|e| corrupt(format!("not a JSON user record: {e}")))?;
        if probe.format > RECORD_FORMAT {
            return Err(AccountsError::UnsupportedFormat {
                key: key.to_string(),
                found: probe.format,
                supported: RECORD_FORMAT,
            });
        }
        if probe.format == 0 {
            return Err(corrupt("format 0 does not exist".into()));
        }
        let stored: StoredRecord = serde_json::from_slice(body)
            .map_err(|e| corrupt(format!("not a JSON user record: {e}")))?;
        if stored.username.to_ascii_lowercase() != username {
            return Err(corrupt(format!(
                "it names user {:?}, not {username:?}",
                shown(&stored.username)
            )));
        }
        let created_at = timefmt::parse(&stored.created_at).ok_or_else(|| {
            corrupt(format!(
                "created_at {:?} is not a timestamp",
                shown(&stored.created_at)
            ))
        })?;
        let updated_at = match &stored.updated_at {
            Some(s) => timefmt::parse(s)
                .ok_or_else(|| corrupt(format!("updated_at {:?} is not a timestamp", shown(s))))?,
            None => created_at,
        };
        Ok(Record {
            username: username.to_string(),
            name: stored.name,
            password_hash: stored.password_hash,
            created_at,
            updated_at,
        })
    }

    fn to_bytes(&self) -> Result<Bytes, AccountsError> {
        let stored = StoredRecord {
            format: RECORD_FORMAT,
            username: self.username.clone(),
            name: self.name.clone(),
            password_hash: self.password_hash.clone(),
            created_at: timefmt::format(self.created_at),
            updated_at: Some(timefmt::format(self.updated_at)),
        };
        serde_json::to_vec(&stored)
            .map(Bytes::from)
            .map_err(|e| AccountsError::Hashing(format!("cannot encode a user record: {e}")))
    }

    fn user(&self) -> User {
        User {
            username: self.username.clone(),
            name: self.name.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// The hashing side of [`Accounts`]: new hashes, verification, upgrade checks.
#[derive(Clone)]
struct Hasher {
    argon2: Argon2<'static>,
    params: HashParams,
    dummy: String,
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// The kinds of stored hash this module can verify.
#[derive(Debug, PartialEq, Eq)]
enum Scheme {
    Argon2,
    Bcrypt,
    Unknown,
}

fn scheme(hash: &str) -> Scheme {
    if hash.starts_with("$argon2") {
        Scheme::Argon2
    } else if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
        Scheme::Bcrypt
    } else {
        Scheme::Unknown
    }
}

impl Hasher {
    fn new(params: HashParams) -> Result<Hasher, AccountsError> {
        let argon2 = Argon2::new(
            Algorithm::Argon2id,
            argon2::Version::V0x13,
            params.to_argon2()?,
        );
        let dummy = if params == HashParams::OWASP {
            DUMMY_HASH_OWASP.to_string()
        } else {
            argon2
                .hash_password_with_salt(DUMMY_PASSWORD, DUMMY_SALT)
                .map_err(|e| AccountsError::Hashing(e.to_string()))?
                .to_string()
        };
        Ok(Hasher {
            argon2,
            params,
            dummy,
        })
    }

    /// A new argon2id hash of `password` with a random salt.
    fn hash(&self, password: &[u8]) -> Result<String, AccountsError> {
        let salt = argon2::password_hash::try_generate_salt()
            .map_err(|e| AccountsError::Hashing(format!("no random salt: {e}")))?;
        self.argon2
            .hash_password_with_salt(password, &salt)
            .map(|h| h.to_string())
            .map_err(|e| AccountsError::Hashing(e.to_string()))
    }

    /// Whether `password` matches `hash`; an error if the hash is unusable.
    fn verify(&self, key: &str, hash: &str, password: &[u8]) -> Result<bool, AccountsError> {
        let corrupt = |reason: String| AccountsError::CorruptRecord {
            key: key.to_string(),
            reason,
        };
        match scheme(hash) {
            Scheme::Argon2 => {
                let parsed = PasswordHash::new(hash)
                    .map_err(|e| corrupt(format!("unparseable argon2 hash: {e}")))?;
                match self.argon2.verify_password(password, &parsed) {
                    Ok(()) => Ok(true),
                    Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
                    Err(e) => Err(corrupt(format!("unusable argon2 hash: {e}"))),
                }
            }
            Scheme::Bcrypt => bcrypt::verify(password, hash)
                .map_err(|e| corrupt(format!("unusable bcrypt hash: {e}"))),
            Scheme::Unknown => Err(corrupt("unknown password hash scheme".into())),
        }
    }

    /// Spends what verifying a current hash costs, for a login with no hash to check.
    fn verify_dummy(&self, password: &[u8]) {
        // The outcome is irrelevant: the caller fails the login either way.
        let _ = self.verify("(dummy)", &self.dummy, password);
    }

    /// Whether `hash` should be replaced by a fresh one with the current parameters.
    fn needs_upgrade(&self, hash: &str) -> bool {
        if !hash.starts_with("$argon2id$") {
            return true;
        }
        let Ok(parsed) = PasswordHash::new(hash) else {
            return true;
        };
        if parsed.version != Some(argon2::Version::V0x13.into()) {
            return true;
        }
        match argon2::Params::try_from(&parsed) {
            Ok(p) => {
                p.m_cost() != self.params.memory_kib
                    || p.t_cost() != self.params.iterations
                    || p.p_cost() != self.params.parallelism
            }
            Err(_) => true,
        }
    }
}

/// Runs CPU-heavy hashing work on tokio's blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, AccountsError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, AccountsError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AccountsError::Hashing(format!("hashing task failed: {e}")))?
}

/// User accounts on a [`Store`](crate::Store); see the module docs.
///
/// Cheap to clone; every operation is safe to run from any number of workers at once.
#[derive(Clone, Debug)]
pub struct Accounts {
    store: DynStore,
    config: AccountsConfig,
    hasher: Hasher,
}

impl Accounts {
    /// Accounts on `store` with `config`.
    ///
    /// Fails only if the hash parameters are out of range. With parameters
    /// other than [`HashParams::OWASP`] it computes one hash (the dummy used
    /// for unknown users), so keep one `Accounts` rather than making one per request.
    pub fn new(store: DynStore, config: AccountsConfig) -> Result<Accounts, AccountsError> {
        let hasher = Hasher::new(config.hash)?;
        Ok(Accounts {
            store,
            config,
            hasher,
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

    /// Creates a user, only if the (folded) username is free.
    ///
    /// One create-if-absent write decides: of any number of concurrent
    /// creates of one username exactly one succeeds, the others get
    /// [`AccountsError::UserAlreadyExists`]. (The write goes through the
    /// update loop, so a lost response is settled by its write id instead of
    /// being mistaken for someone else's account.)
    pub async fn create(
        &self,
        username: &str,
        name: &str,
        password: &str,
    ) -> Result<User, AccountsError> {
        let username = normalize_username(username)?;
        validate_name(name)?;
        validate_password(password)?;
        let hash = self.hash(password).await?;
        let now = self.config.clock.now();
        let record = Record {
            username: username.clone(),
            name: name.to_string(),
            password_hash: hash,
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

    /// Checks a password and returns the user.
    ///
    /// A wrong password, an unknown user and a username that breaks the rules
    /// all give [`AccountsError::InvalidCredentials`] at the same cost (see
    /// the module docs); a password over [`PASSWORD_MAX_BYTES`] is refused
    /// with [`AccountsError::PasswordTooLong`] before any hashing. On
    /// success, a bcrypt hash or an argon2 hash with outdated parameters is
    /// upgraded with a conditional write; losing that race to another write
    /// is harmless and ignored.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<User, AccountsError> {
        check_password_max(password)?;
        let found = match normalize_username(username) {
            Ok(username) => self.read(&username).await?,
            Err(_) => None,
        };
        let Some((record, version)) = found else {
            let hasher = self.hasher.clone();
            let password = password.as_bytes().to_vec();
            blocking(move || {
                hasher.verify_dummy(&password);
                Ok(())
            })
            .await?;
            return Err(AccountsError::InvalidCredentials);
        };
        let key = key_of(&record.username);
        let hasher = self.hasher.clone();
        let (hash, pw, k) = (
            record.password_hash.clone(),
            password.as_bytes().to_vec(),
            key.clone(),
        );
        let ok = blocking(move || hasher.verify(&k, &hash, &pw)).await?;
        if !ok {
            return Err(AccountsError::InvalidCredentials);
        }
        if self.hasher.needs_upgrade(&record.password_hash) {
            self.upgrade(&key, &record, version, password).await;
        }
        Ok(record.user())
    }

    /// Replaces an old hash after a successful login, if the record is still
    /// at the version that was verified. Never fails the login.
    async fn upgrade(&self, key: &str, record: &Record, verified: crate::Version, password: &str) {
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

    /// Changes a user's display name and/or password, through the update loop.
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

    /// Changes only the password; see [`Accounts::update`].
    pub async fn set_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<User, AccountsError> {
        self.update(username, UserUpdate::password(password)).await
    }

    /// Deletes a user: `true` if one was deleted, `false` if there was none.
    ///
    /// The delete is conditional on the version read, through the update loop.
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
            // Keys below users/ that are not a user's record are not ours.
            .filter(|u| normalize_username(u).ok().as_deref() == Some(*u))
            .map(str::to_string)
            .collect();
        let records: Vec<Result<Option<(Record, crate::Version)>, AccountsError>> =
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

    /// Reads and parses a (folded) user's record with its version; `None` if absent.
    async fn read(
        &self,
        username: &str,
    ) -> Result<Option<(Record, crate::Version)>, AccountsError> {
        let key = key_of(username);
        let got = self
            .config
            .retry
            .run(|| async {
                match self.store.get(&key).await {
                    Ok(o) => Ok(Some(o)),
                    Err(Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        match got {
            Some(o) => Ok(Some((
                Record::parse(&key, username, &o.body)?,
                o.meta.version,
            ))),
            None => Ok(None),
        }
    }

    /// Hashes a new password on the blocking pool.
    async fn hash(&self, password: &str) -> Result<String, AccountsError> {
        let hasher = self.hasher.clone();
        let password = password.as_bytes().to_vec();
        blocking(move || hasher.hash(&password)).await
    }
}

/// RFC 3339 timestamps without a date-time dependency (civil-date arithmetic
/// after Howard Hinnant's `days_from_civil`).
mod timefmt {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = if m > 2 { m - 3 } else { m + 9 };
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    fn civil_from_days(z: i64) -> (i64, i64, i64) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y, m, d)
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub(super) fn format(t: SystemTime) -> String {
        let millis: i128 = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i128,
            Err(e) => -(e.duration().as_millis() as i128),
        };
        let secs = millis.div_euclid(1000) as i64;
        let ms = millis.rem_euclid(1000);
        let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            sod / 3600,
            sod / 60 % 60,
            sod % 60
        )
    }

    fn num(s: &str, range: std::ops::Range<usize>) -> Option<i64> {
        let part = s.get(range)?;
        if part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    }

    /// RFC 3339 / ISO 8601: `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|±HH:MM]`,
    /// without a zone read as UTC.
    pub(super) fn parse(s: &str) -> Option<SystemTime> {
        let b = s.as_bytes();
        if b.len() < 19
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't' | b' ')
            || b[13] != b':'
            || b[16] != b':'
        {
            return None;
        }
        let (y, mo, d) = (num(s, 0..4)?, num(s, 5..7)?, num(s, 8..10)?);
        let (h, mi, sec) = (num(s, 11..13)?, num(s, 14..16)?, num(s, 17..19)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
            return None;
        }
        let mut rest = &s[19..];
        let mut nanos: i64 = 0;
        if let Some(frac) = rest.strip_prefix('.') {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            for (i, c) in frac[..digits].bytes().take(9).enumerate() {
                nanos += i64::from(c - b'0') * 10i64.pow(8 - i as u32);
            }
            rest = &frac[digits..];
        }
        let offset_secs = match rest {
            "" | "Z" | "z" => 0,
            _ => {
                let sign = match rest.as_bytes()[0] {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                    return None;
                }
                let (oh, om) = (num(rest, 1..3)?, num(rest, 4..6)?);
                if oh > 23 || om > 59 {
                    return None;
                }
                sign * (oh * 3600 + om * 60)
            }
        };
        let secs =
            days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec.min(59) - offset_secs;
        let t = if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        };
        Some(t + Duration::from_nanos(nanos as u64))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trips_and_reads_iso_variants() {
            let t = UNIX_EPOCH + Duration::from_millis(1_768_480_496_789);
            assert_eq!(format(t), "2026-01-15T12:34:56.789Z");
            assert_eq!(parse("2026-01-15T12:34:56.789Z"), Some(t));
            assert_eq!(format(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
            assert_eq!(
                format(UNIX_EPOCH - Duration::from_millis(1)),
                "1969-12-31T23:59:59.999Z"
            );
            // Python's isoformat(), no zone: UTC.
            assert_eq!(
                parse("2026-01-15T12:34:56.789123"),
                Some(t + Duration::from_micros(123))
            );
            assert_eq!(
                parse("2026-01-15 12:34:56"),
                Some(t - Duration::from_millis(789))
            );
            assert_eq!(
                parse("2026-01-15T14:34:56.789+02:00"),
                Some(t),
                "offsets are applied"
            );
            assert_eq!(
                parse("2024-02-29T00:00:00Z").map(format).as_deref(),
                Some("2024-02-29T00:00:00.000Z")
            );
            for bad in [
                "",
                "2026-01-15",
                "2026-13-01T00:00:00Z",
                "2026-01-15T25:00:00Z",
                "2026-01-15T12:34:56.Z",
                "2026-01-15T12:34:56+0200",
                "20x6-01-15T12:34:56Z",
                "2026-01-15T12:34:56Zjunk",
            ] {
                assert_eq!(parse(bad), None, "{bad:?}");
            }
        }

        #[test]
        fn civil_conversion_matches_over_centuries() {
            for days in (-800_000..800_000).step_by(997) {
                let (y, m, d) = civil_from_days(days);
                assert_eq!(days_from_civil(y, m, d), days);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_hash_is_the_owasp_dummy() {
        let h = Hasher::new(HashParams::OWASP).unwrap();
        assert_eq!(h.dummy, DUMMY_HASH_OWASP);
        assert!(h.dummy.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        // The constant is what it claims to be.
        assert!(h.verify("k", DUMMY_HASH_OWASP, DUMMY_PASSWORD).unwrap());
        assert!(
            !h.needs_upgrade(DUMMY_HASH_OWASP),
            "the dummy costs what a current hash costs"
        );
    }

    #[test]
    fn dummy_hash_follows_custom_params() {
        let h = Hasher::new(HashParams::new(64, 1, 1)).unwrap();
        assert!(h.dummy.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(!h.needs_upgrade(&h.dummy));
        assert!(h.needs_upgrade(DUMMY_HASH_OWASP));
    }

    #[test]
    fn bad_params_are_refused() {
        assert!(matches!(
            Hasher::new(HashParams::new(0, 1, 1)),
            Err(AccountsError::InvalidHashParams(_))
        ));
    }

    #[test]
    fn schemes() {
        assert_eq!(scheme(DUMMY_HASH_OWASP), Scheme::Argon2);
        for p in ["$2a$", "$2b$", "$2y$"] {
            assert_eq!(scheme(&format!("{p}04$abc")), Scheme::Bcrypt);
        }
        assert_eq!(scheme("$2x$04$abc"), Scheme::Unknown);
        assert_eq!(scheme("plaintext"), Scheme::Unknown);
    }

    #[test]
    fn errors_never_quote_the_hash() {
        let h = Hasher::new(HashParams::new(64, 1, 1)).unwrap();
        let broken = "$argon2id$v=19$m=64,t=1,p=1$not-base64!$secret";
        let e = h.verify("users/x", broken, b"pw").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
        let e = h
            .verify("users/x", "$2b$04$tooshort", b"pw")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("tooshort"), "{e}");
    }

    #[test]
    fn username_boundaries() {
        assert_eq!(normalize_username("abc").unwrap(), "abc");
        assert_eq!(normalize_username(&"a".repeat(32)).unwrap(), "a".repeat(32));
        assert_eq!(normalize_username("9lives").unwrap(), "9lives");
        assert!(normalize_username(&"a".repeat(33)).is_err());
        assert!(matches!(
            normalize_username("ab\u{e9}c"),
            Err(AccountsError::UsernameCharacter { ch: '\u{e9}', .. })
        ));
        assert!(matches!(
            normalize_username(".ab"),
            Err(AccountsError::UsernameStart { ch: '.', .. })
        ));
    }
}

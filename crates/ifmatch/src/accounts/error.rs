//! [`AccountsError`]: what can go wrong in an account operation, one variant
//! per broken rule or refusal, never quoting a password hash.

use crate::error::{Error, ErrorKind};
use crate::update::UpdateError;

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
        /// [`USERNAME_MIN_LEN`](super::USERNAME_MIN_LEN).
        min: usize,
        /// [`USERNAME_MAX_LEN`](super::USERNAME_MAX_LEN).
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
    /// Password rule: at least [`PASSWORD_MIN_CHARS`](super::PASSWORD_MIN_CHARS) characters.
    #[error("password is too short: {len} characters; a password must have at least {min}")]
    PasswordTooShort {
        /// The password's length in characters.
        len: usize,
        /// [`PASSWORD_MIN_CHARS`](super::PASSWORD_MIN_CHARS).
        min: usize,
    },
    /// Password rule: at most [`PASSWORD_MAX_BYTES`](super::PASSWORD_MAX_BYTES) bytes.
    #[error("password is too long: {len} bytes; a password may have at most {max} bytes")]
    PasswordTooLong {
        /// The password's length in bytes.
        len: usize,
        /// [`PASSWORD_MAX_BYTES`](super::PASSWORD_MAX_BYTES).
        max: usize,
    },
    /// Display-name rule: at most [`NAME_MAX_CHARS`](super::NAME_MAX_CHARS) characters.
    #[error("display name is {len} characters long; a display name may have at most {max}")]
    NameTooLong {
        /// The name's length in characters.
        len: usize,
        /// [`NAME_MAX_CHARS`](super::NAME_MAX_CHARS).
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
    /// [`Accounts::create`](super::Accounts::create): the username is taken.
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
    /// [`Accounts::authenticate`](super::Accounts::authenticate): wrong password or unknown user; deliberately
    /// the same error for both.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// [`Accounts::list`](super::Accounts::list): the page limit is 0 or above [`MAX_PAGE_LIMIT`](super::MAX_PAGE_LIMIT).
    #[error("page limit {limit} is out of range; it must be 1-{max}")]
    InvalidPageLimit {
        /// The limit given.
        limit: usize,
        /// [`MAX_PAGE_LIMIT`](super::MAX_PAGE_LIMIT).
        max: usize,
    },
    /// [`Accounts::new`](super::Accounts::new): the argon2 parameters are out of range.
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
        /// [`RECORD_FORMAT`](super::RECORD_FORMAT).
        supported: u32,
    },
    /// [`Accounts::change_password`](super::Accounts::change_password): the account changed between the check
    /// of the old password and the write of the new one; nothing was written.
    #[error("user '{username}' changed while the password was being changed; try again")]
    AccountChanged {
        /// The (folded) username.
        username: String,
    },
    /// Every hashing thread is busy and the queue in front of them is full
    /// (see [`AccountsConfig::hash_queue`](super::AccountsConfig::hash_queue)): nothing was hashed; retry later.
    #[error(
        "password hashing is at capacity ({workers} running, {queue} waiting); retry in {} s",
        retry_after.as_secs().max(1)
    )]
    Busy {
        /// The number of hashing threads.
        workers: usize,
        /// The queue length.
        queue: usize,
        /// When a retry is sensible.
        retry_after: std::time::Duration,
    },
    /// Too many failed logins for this username or from this client address
    /// (see [`ThrottleConfig`](super::ThrottleConfig)): refused before any hashing; retry later.
    #[error(
        "too many failed logins {scope}; retry in {} s",
        retry_after.as_secs().max(1)
    )]
    Throttled {
        /// `for this username` or `from this address`.
        scope: &'static str,
        /// When the back-off ends.
        retry_after: std::time::Duration,
    },
    /// Hashing failed (the system's random source, or a hashing thread, failed).
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
    /// a missing one [`ErrorKind::NotFound`], a full hashing queue or a
    /// login back-off [`ErrorKind::Unavailable`] (retry later; match
    /// [`AccountsError::retry_after`] to answer 429).
    /// [`AccountsError::InvalidCredentials`] is [`ErrorKind::Other`]: match
    /// the variant to answer 401.
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
            UserAlreadyExists { .. } | AccountChanged { .. } => ErrorKind::Conflict,
            Busy { .. } | Throttled { .. } => ErrorKind::Unavailable,
            UserNotFound { .. } => ErrorKind::NotFound,
            InvalidCredentials | CorruptRecord { .. } | UnsupportedFormat { .. } | Hashing(_) => {
                ErrorKind::Other
            }
            Store(e) => e.kind(),
            Update(e) => e.kind(),
        }
    }
}

impl AccountsError {
    /// For [`AccountsError::Busy`] and [`AccountsError::Throttled`]: how long
    /// to wait before retrying.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            AccountsError::Busy { retry_after, .. }
            | AccountsError::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
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

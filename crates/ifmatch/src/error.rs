//! Errors: few and precise.
//!
//! Every fallible operation in ifmatch returns [`Error`]. Callers that only
//! need to branch (retry, report a conflict, exit with a code) use
//! [`Error::kind`] and [`ErrorKind`]; callers that need details (which key,
//! which versions) match on the variants.

use crate::store::{Condition, Version};

/// Result alias used throughout ifmatch.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error from outside ifmatch (a transport, a user closure).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from a store or a primitive built on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A conditional write or delete lost: the key was not in the expected state.
    #[error("conflict on key '{key}': expected {expected}, found {}", describe_actual(.actual))]
    Conflict {
        /// The key written.
        key: String,
        /// The condition the write carried.
        expected: Condition,
        /// The version found, when the backend reports it (`None`: absent or unknown).
        actual: Option<Version>,
    },
    /// The key does not exist.
    #[error("key '{key}' not found")]
    NotFound {
        /// The key read.
        key: String,
    },
    /// The key is not valid (see [`crate::key::validate_key`]).
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The rejected key (possibly truncated).
        key: String,
        /// Why it was rejected.
        reason: String,
    },
    /// An argument other than a key is not valid (metadata, a store URL, a setting).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The value is larger than the backend accepts.
    #[error(
        "value for key '{key}' is {size} bytes, larger than this store's limit of {limit} bytes"
    )]
    TooLarge {
        /// The key written.
        key: String,
        /// The size of the rejected value (including what the backend counts).
        size: u64,
        /// The backend's limit.
        limit: u64,
    },
    /// The store could not be reached or refused for a transient reason; retryable.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The request was sent but its outcome is unknown (it may or may not have landed).
    #[error("outcome unknown for key '{key}': {message}")]
    Ambiguous {
        /// The key written.
        key: String,
        /// What happened.
        message: String,
    },
    /// The backend cannot perform this operation.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Any other failure (a permission error, a corrupt record): not retryable.
    #[error("{message}")]
    Other {
        /// What failed.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
}

fn describe_actual(actual: &Option<Version>) -> String {
    match actual {
        Some(v) => format!("version {v}"),
        None => "no object (or an unreported version)".to_string(),
    }
}

/// The small public classification of an [`Error`], stable across backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// See [`Error::Conflict`].
    Conflict,
    /// See [`Error::NotFound`].
    NotFound,
    /// See [`Error::InvalidKey`] and [`Error::InvalidInput`].
    Invalid,
    /// See [`Error::TooLarge`].
    TooLarge,
    /// See [`Error::Unavailable`].
    Unavailable,
    /// See [`Error::Ambiguous`].
    Ambiguous,
    /// See [`Error::Unsupported`].
    Unsupported,
    /// See [`Error::Other`].
    Other,
}

impl Error {
    /// The classification of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::InvalidKey { .. } | Error::InvalidInput(_) => ErrorKind::Invalid,
            Error::TooLarge { .. } => ErrorKind::TooLarge,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Ambiguous { .. } => ErrorKind::Ambiguous,
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::Other { .. } => ErrorKind::Other,
        }
    }

    /// True for errors that a retry of the same request may cure ([`Error::Unavailable`]).
    ///
    /// [`Error::Ambiguous`] is deliberately not retryable here: a blind retry
    /// could apply a write twice. The update loop resolves it instead.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// An [`Error::Unavailable`] with a source.
    pub fn unavailable(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Unavailable {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// An [`Error::Other`] with a source.
    pub fn other(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Other {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// An [`Error::Other`] without a source.
    pub fn msg(message: impl Into<String>) -> Self {
        Error::Other {
            message: message.into(),
            source: None,
        }
    }

    /// A [`Error::Conflict`].
    pub fn conflict(key: &str, expected: Condition, actual: Option<Version>) -> Self {
        Error::Conflict {
            key: key.to_string(),
            expected,
            actual,
        }
    }

    /// A [`Error::NotFound`].
    pub fn not_found(key: &str) -> Self {
        Error::NotFound {
            key: key.to_string(),
        }
    }
}

//! Why an idempotent run, claim or completion failed: [`IdempotencyError`],
//! generic over the handler's own error type, and its classification into an
//! [`ErrorKind`](crate::ErrorKind).
//!
//! A handler's error is returned as it is ([`IdempotencyError::Handler`]);
//! a store failure keeps its [`Error`] (and so its kind).

use std::time::Duration;

use serde_json::Value;

#[cfg(doc)]
use super::Idempotency;
use super::RecordState;
use crate::error::Error;

/// Why [`Idempotency::run`] failed. `E` is the handler's error type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdempotencyError<E> {
    /// Another worker holds a fresh claim on the key (after any configured wait).
    #[error(
        "idempotency key '{key}' found in-progress: another worker claimed it {age:?} ago (stale after {timeout:?}); waited {waited:?}"
    )]
    InProgress {
        /// The key.
        key: String,
        /// How old the claim is.
        age: Duration,
        /// The in-progress timeout after which it may be taken over.
        timeout: Duration,
        /// How long this call waited for it.
        waited: Duration,
    },
    /// The key was used before with a different payload.
    #[error(
        "idempotency key '{key}' found {state} for a different payload (stored hash {stored}, this payload {given})"
    )]
    PayloadMismatch {
        /// The key.
        key: String,
        /// The state of the record found.
        state: RecordState,
        /// The stored payload hash (hex SHA-256).
        stored: String,
        /// This call's payload hash.
        given: String,
    },
    /// The handler failed; the claim was released (if `released`) so a retry can run.
    #[error("handler for idempotency key '{key}' failed ({}): {source}", if *released { "claim released, a retry may run" } else { "claim could not be released; it goes stale after the in-progress timeout" })]
    Handler {
        /// The key.
        key: String,
        /// Whether the claim was deleted.
        released: bool,
        /// The handler's error.
        #[source]
        source: E,
    },
    /// Complete or abandon named a claim that does not hold the key.
    #[error("idempotency key '{key}' is not held by claim {claim_id}: found {found}")]
    NotClaimed {
        /// The key.
        key: String,
        /// The claim id given.
        claim_id: String,
        /// What the record holds instead.
        found: String,
    },
    /// The handler ran, but its result could not be stored (claim taken over, or store failure).
    #[error("handler for idempotency key '{key}' ran but its result was not stored: {reason}")]
    NotSaved {
        /// The key.
        key: String,
        /// The handler's result, as JSON.
        result: Value,
        /// Why it was not stored.
        reason: String,
    },
    /// A stored record could not be read, or a value could not be encoded.
    #[error("idempotency key '{key}': {message}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The key is not valid, or a setting is not.
    #[error("invalid idempotency request: {0}")]
    Invalid(String),
    /// The store failed (non-retryable, or retryable beyond the budget).
    #[error("idempotency key '{key}': {source}")]
    Store {
        /// The key.
        key: String,
        /// The store's error.
        #[source]
        source: Error,
    },
}

impl<E> IdempotencyError<E> {
    /// The classification, for exit codes and HTTP statuses (a handler failure is `Other`).
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            IdempotencyError::InProgress { .. }
            | IdempotencyError::PayloadMismatch { .. }
            | IdempotencyError::NotClaimed { .. } => crate::ErrorKind::Conflict,
            IdempotencyError::Invalid(_) => crate::ErrorKind::Invalid,
            IdempotencyError::Store { source, .. } => source.kind(),
            _ => crate::ErrorKind::Other,
        }
    }
}

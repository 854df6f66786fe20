//! Why a tenant database operation failed: [`TenantDbError`] and its
//! classification into an [`ErrorKind`](crate::ErrorKind) (for exit codes and
//! HTTP statuses).
//!
//! Every public operation of [`TenantDbs`](super::TenantDbs) returns this
//! error; a store failure keeps its [`Error`] (and so its kind) unchanged.

use super::LimitKind;
#[cfg(doc)]
use super::{Sandbox, TenantDbs};
use crate::error::{BoxError, Error};

/// Why a tenant database operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TenantDbError {
    /// The tenant has no database (reads do not create one; writes do).
    #[error("tenant '{tenant}' has no database")]
    NotFound {
        /// The tenant id.
        tenant: String,
    },
    /// An import without `force` found the tenant already there.
    #[error("tenant '{tenant}' already has a database")]
    Exists {
        /// The tenant id.
        tenant: String,
    },
    /// Other writers kept winning until the retry budget ran out.
    #[error(
        "conflict on tenant '{tenant}': gave up after {attempts} attempts ({conflicts} conflicts)"
    )]
    Conflict {
        /// The tenant id.
        tenant: String,
        /// Attempts made.
        attempts: u32,
        /// Conflicts among them.
        conflicts: u32,
    },
    /// SQLite refused a statement; the message is SQLite's.
    #[error("SQL error: {message}")]
    Sql {
        /// SQLite's message.
        message: String,
        /// The rusqlite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The closure panicked; the transaction was rolled back and nothing was uploaded.
    #[error("the closure panicked: {0}")]
    Panicked(String),
    /// The closure returned its own error; the transaction was rolled back.
    #[error("aborted by the closure: {0}")]
    Aborted(#[source] BoxError),
    /// A stored record or a cached file is not what it should be.
    #[error("corrupt {what}: {message}")]
    Corrupt {
        /// Which record or file.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The local cache could not be read or written.
    #[error("cache I/O failed while {message}: {source}")]
    Io {
        /// What was being done.
        message: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another [`TenantDbs`] holds the cache directory.
    #[error("the cache directory is in use by another TenantDbs")]
    CacheInUse,
    /// A request that is not valid (an empty batch, a parameter of the wrong shape).
    #[error("{0}")]
    InvalidInput(String),
    /// The [`Sandbox`] refused a statement (it would touch files or the connection).
    #[error("refused: {message}")]
    Denied {
        /// What was refused, and why.
        message: String,
    },
    /// A batch ran into one of the [`Sandbox`]'s limits; nothing was committed.
    #[error("{limit} exceeded: {message}")]
    LimitExceeded {
        /// Which limit.
        limit: LimitKind,
        /// What happened.
        message: String,
    },
    /// The store failed (or a tenant id is not a valid key).
    #[error(transparent)]
    Store(#[from] Error),
}

impl From<rusqlite::Error> for TenantDbError {
    fn from(e: rusqlite::Error) -> Self {
        TenantDbError::Sql {
            message: e.to_string(),
            source: e,
        }
    }
}

impl TenantDbError {
    /// The classification, for exit codes and HTTP statuses.
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            TenantDbError::NotFound { .. } => K::NotFound,
            TenantDbError::Exists { .. } | TenantDbError::Conflict { .. } => K::Conflict,
            TenantDbError::Sql { .. }
            | TenantDbError::InvalidInput(_)
            | TenantDbError::Denied { .. } => K::Invalid,
            TenantDbError::LimitExceeded { .. } => K::TooLarge,
            TenantDbError::Store(e) => e.kind(),
            _ => K::Other,
        }
    }
}

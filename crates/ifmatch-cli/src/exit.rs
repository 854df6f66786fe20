//! Exit codes and the one-line error messages of the `ifmatch` binary.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | error: store unavailable, outcome unknown, I/O error, a doctor check failed |
//! | 2 | usage: bad arguments (clap's own code), an invalid key, metadata or store URL |
//! | 3 | conflict ([`ErrorKind::Conflict`]): a conditional write or delete lost, a lease is held by another (or we are not its owner), a user already exists, an idempotency key is in progress or was used for another payload, a snapshot publish kept losing |
//! | 4 | not found ([`ErrorKind::NotFound`]): a key, lease, idempotency record, user, snapshot or snapshot version does not exist |
//!
//! The primitives' errors (leases, idempotency, accounts, snapshots) map by
//! their `kind()`, like the store's: a rule broken (a short password, a bad
//! name) is usage (2).
//!
//! Every failure prints exactly one line on standard error, starting with
//! `ifmatch: `, e.g. `ifmatch: conflict on key 'k': expected no object, found version g3`.

use std::fmt::Write as _;
use std::process::ExitCode;

use ifmatch::ErrorKind;

/// Success.
pub const OK: u8 = 0;
/// A failure that is not one of the others.
pub const ERROR: u8 = 1;
/// The command line, a key, metadata or the store URL is invalid.
pub const USAGE: u8 = 2;
/// A precondition (`--if-match`, `--if-absent`) did not hold.
pub const CONFLICT: u8 = 3;
/// The key does not exist.
pub const NOT_FOUND: u8 = 4;

/// The exit code for a class of store error.
pub fn code_for_kind(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Conflict => CONFLICT,
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::Invalid => USAGE,
        ErrorKind::TooLarge
        | ErrorKind::Unavailable
        | ErrorKind::Ambiguous
        | ErrorKind::Unsupported
        | ErrorKind::Other => ERROR,
    }
}

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// The store refused or failed.
    Store(ifmatch::Error),
    /// The arguments are wrong in a way clap could not see.
    Usage(String),
    /// Reading the value or writing the output failed.
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A primitive (lease, idempotency, accounts, snapshot) refused or failed;
    /// its error kind gives the exit code.
    Primitive {
        /// The classification the primitive gave its error.
        kind: ErrorKind,
        /// The error and its sources, on one line.
        message: String,
    },
    /// The command already reported what happened (the doctor's table); just exit.
    Reported(u8),
}

impl From<ifmatch::Error> for Failure {
    fn from(e: ifmatch::Error) -> Self {
        Failure::Store(e)
    }
}

impl From<ifmatch::lease::LeaseError> for Failure {
    fn from(e: ifmatch::lease::LeaseError) -> Self {
        Failure::primitive(e.kind(), &e)
    }
}

impl<E: std::error::Error + 'static> From<ifmatch::idempotency::IdempotencyError<E>> for Failure {
    fn from(e: ifmatch::idempotency::IdempotencyError<E>) -> Self {
        Failure::primitive(e.kind(), &e)
    }
}

impl From<ifmatch::accounts::AccountsError> for Failure {
    fn from(e: ifmatch::accounts::AccountsError) -> Self {
        Failure::primitive(e.kind(), &e)
    }
}

impl From<ifmatch::snapshot::SnapshotError> for Failure {
    fn from(e: ifmatch::snapshot::SnapshotError) -> Self {
        Failure::primitive(e.kind(), &e)
    }
}

impl Failure {
    /// A primitive's error of class `kind`.
    pub fn primitive(kind: ErrorKind, err: &dyn std::error::Error) -> Self {
        Failure::Primitive {
            kind,
            message: error_chain(err),
        }
    }

    /// An I/O failure while doing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Failure::Io {
            what: what.into(),
            source,
        }
    }

    /// The process exit code for this failure.
    pub fn code(&self) -> u8 {
        match self {
            Failure::Store(e) => code_for_kind(e.kind()),
            Failure::Usage(_) => USAGE,
            Failure::Primitive { kind, .. } => code_for_kind(*kind),
            Failure::Io { .. } => ERROR,
            Failure::Reported(code) => *code,
        }
    }

    /// The one-line message, without the `ifmatch: ` prefix (`None` if already reported).
    pub fn message(&self) -> Option<String> {
        match self {
            Failure::Store(e) => Some(error_chain(e)),
            Failure::Usage(m) | Failure::Primitive { message: m, .. } => Some(m.clone()),
            Failure::Io { what, source } => Some(format!("{what}: {source}")),
            Failure::Reported(_) => None,
        }
    }

    /// Prints the message (if any) on standard error and returns the exit code.
    pub fn report(self) -> ExitCode {
        if let Some(m) = self.message() {
            eprintln!("ifmatch: {}", one_line(&m));
        }
        ExitCode::from(self.code())
    }
}

/// A "does not exist" failure (exit code 4) with `message`.
pub fn not_found(message: String) -> Failure {
    Failure::Primitive {
        kind: ErrorKind::NotFound,
        message,
    }
}

/// An error and its sources on one line, skipping a source whose text is already shown.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !s.is_empty() && !out.contains(&s) {
            let _ = write!(out, ": {s}");
        }
        cur = e.source();
    }
    out
}

/// Collapses line breaks so a message stays on one line.
pub fn one_line(s: &str) -> String {
    s.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ifmatch::{Condition, Error, Version};

    #[test]
    fn codes_by_kind() {
        let conflict = Error::conflict("k", Condition::Absent, Some(Version::new("g3")));
        let f = Failure::from(conflict);
        assert_eq!(f.code(), CONFLICT);
        assert_eq!(
            f.message().unwrap(),
            "conflict on key 'k': expected no object, found version g3"
        );
        assert_eq!(Failure::from(Error::not_found("k")).code(), NOT_FOUND);
        assert_eq!(Failure::from(Error::InvalidInput("x".into())).code(), USAGE);
        assert_eq!(Failure::from(Error::msg("boom")).code(), ERROR);
    }

    #[test]
    fn primitive_errors_map_by_kind() {
        use ifmatch::accounts::AccountsError;
        use ifmatch::snapshot::SnapshotError;
        let exists = AccountsError::UserAlreadyExists {
            username: "alice".into(),
        };
        assert_eq!(Failure::from(exists).code(), CONFLICT);
        let short = AccountsError::PasswordTooShort { len: 3, min: 8 };
        let f = Failure::from(short);
        assert_eq!(f.code(), USAGE);
        assert!(f.message().unwrap().contains("password is too short"));
        let missing = SnapshotError::NotFound { name: "q".into() };
        assert_eq!(Failure::from(missing).code(), NOT_FOUND);
        let bad = ifmatch::lease::LeaseError::Invalid("zero TTL".into());
        assert_eq!(Failure::from(bad).code(), USAGE);
        assert_eq!(not_found("no such lease".into()).code(), NOT_FOUND);
    }

    #[test]
    fn chains_sources_on_one_line() {
        let io = std::io::Error::other("connection reset\nby peer");
        let e = Error::unavailable("GET failed", io);
        let m = one_line(&error_chain(&e));
        assert_eq!(m, "store unavailable: GET failed: connection reset by peer");
    }
}

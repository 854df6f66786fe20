//! Library errors as Python exceptions.
//!
//! The classes live in `ifmatch/_errors.py` (so they can have two bases, like
//! `InvalidKeyError(Error, ValueError)`); this module only picks the class
//! for each library error and copies its message and details. Where a
//! library error has no more specific class, its [`ErrorKind`] decides. An
//! exception raised by a Python callback travels through the library inside
//! the error as a [`PyErr`] and comes out unchanged.

use std::error::Error as StdError;

use ifmatch::accounts::AccountsError;
use ifmatch::idempotency::IdempotencyError;
use ifmatch::lease::{FenceError, LeaseError};
use ifmatch::snapshot::SnapshotError;
use ifmatch::tenantdb::TenantDbError;
use ifmatch::update::UpdateError;
use ifmatch::{Condition, Error, ErrorKind};
use pyo3::BoundObject;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};

/// A detail attached to an exception: its attribute name and value.
type Detail = (&'static str, Py<PyAny>);

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// An instance of `ifmatch._errors.<class>` with `message` and `details` as attributes.
fn raise(py: Python<'_>, class: &str, message: String, details: Vec<Detail>) -> PyErr {
    let make = || -> PyResult<PyErr> {
        let module = ERRORS.get_or_try_init(py, || {
            PyModule::import(py, "ifmatch._errors").map(Bound::unbind)
        })?;
        let kwargs = PyDict::new(py);
        for (name, value) in details {
            kwargs.set_item(name, value)?;
        }
        let exc = module
            .bind(py)
            .getattr(class)?
            .call((message,), Some(&kwargs))?;
        Ok(PyErr::from_value(exc))
    };
    make().unwrap_or_else(|e| e)
}

fn obj<'py, T: IntoPyObject<'py>>(py: Python<'py>, v: T) -> Py<PyAny> {
    match v.into_pyobject(py) {
        Ok(b) => b.into_any().unbind(),
        Err(_) => py.None(),
    }
}

/// The message of `e` followed by those of its sources that it does not already quote.
fn message(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The class for errors that have nothing more specific than their kind.
fn kind_class(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Conflict => "ConflictError",
        ErrorKind::NotFound => "NotFoundError",
        ErrorKind::Invalid => "InvalidInputError",
        ErrorKind::TooLarge => "TooLargeError",
        ErrorKind::Unavailable => "UnavailableError",
        ErrorKind::Ambiguous => "AmbiguousError",
        ErrorKind::Unsupported => "UnsupportedError",
        ErrorKind::Other => "Error",
    }
}

/// The Python exception a callback raised, if `e` carries one.
fn python_error(py: Python<'_>, e: &(dyn StdError + 'static)) -> Option<PyErr> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(p) = err.downcast_ref::<PyErr>() {
            return Some(p.clone_ref(py));
        }
        cur = err.source();
    }
    None
}

fn condition(py: Python<'_>, c: &Condition) -> Py<PyAny> {
    match c {
        Condition::Matches(v) => obj(py, v.as_str()),
        _ => py.None(),
    }
}

/// A store error as a Python exception, with `text` as its message.
fn store_error_as(py: Python<'_>, e: &Error, text: String) -> PyErr {
    match e {
        Error::Conflict {
            key,
            expected,
            actual,
        } => raise(
            py,
            "ConflictError",
            text,
            vec![
                ("key", obj(py, key.as_str())),
                ("expected", condition(py, expected)),
                ("actual", obj(py, actual.as_ref().map(|v| v.as_str()))),
            ],
        ),
        Error::NotFound { key } | Error::Ambiguous { key, .. } => raise(
            py,
            kind_class(e.kind()),
            text,
            vec![("key", obj(py, key.as_str()))],
        ),
        Error::InvalidKey { key, reason } => raise(
            py,
            "InvalidKeyError",
            text,
            vec![
                ("key", obj(py, key.as_str())),
                ("reason", obj(py, reason.as_str())),
            ],
        ),
        Error::TooLarge { key, size, limit } => raise(
            py,
            "TooLargeError",
            text,
            vec![
                ("key", obj(py, key.as_str())),
                ("size", obj(py, *size)),
                ("limit", obj(py, *limit)),
            ],
        ),
        other => raise(py, kind_class(other.kind()), text, vec![]),
    }
}

/// A store error as a Python exception.
pub fn store_error(py: Python<'_>, e: &Error) -> PyErr {
    store_error_as(py, e, message(e))
}

/// An update-loop error; a callback's exception comes out unchanged.
pub fn update_error(py: Python<'_>, e: &UpdateError) -> PyErr {
    match e {
        UpdateError::Aborted { source, .. } => python_error(py, source.as_ref())
            .unwrap_or_else(|| raise(py, "Error", message(e), vec![])),
        UpdateError::Store(inner) => store_error(py, inner),
        UpdateError::Conflict { last, .. } => store_error_as(py, last, message(e)),
        UpdateError::Ambiguous { key } => raise(
            py,
            "AmbiguousError",
            message(e),
            vec![("key", obj(py, key.as_str()))],
        ),
    }
}

/// A lease error.
pub fn lease_error(py: Python<'_>, e: &LeaseError) -> PyErr {
    match e {
        LeaseError::Held {
            name,
            holder,
            token,
            expires_in,
            ..
        } => raise(
            py,
            "LeaseHeldError",
            message(e),
            vec![
                ("key", obj(py, name.as_str())),
                ("name", obj(py, name.as_str())),
                ("holder", obj(py, holder.as_str())),
                ("token", obj(py, *token)),
                ("expires_in", obj(py, expires_in.as_secs_f64())),
            ],
        ),
        LeaseError::NotOwner { name, holder, .. } => {
            lease_lost(py, name, holder.as_deref(), message(e))
        }
        LeaseError::Ambiguous { name, .. } => raise(
            py,
            "AmbiguousError",
            message(e),
            vec![("key", obj(py, name.as_str()))],
        ),
        LeaseError::Store { source, .. } => store_error_as(py, source, message(e)),
        other => raise(py, kind_class(other.kind()), message(other), vec![]),
    }
}

/// `LeaseLostError` for lease `name`, now held by `holder` if anyone.
pub fn lease_lost(py: Python<'_>, name: &str, holder: Option<&str>, text: String) -> PyErr {
    raise(
        py,
        "LeaseLostError",
        text,
        vec![("name", obj(py, name)), ("holder", obj(py, holder))],
    )
}

/// A fenced-write error.
pub fn fence_error(py: Python<'_>, e: &FenceError) -> PyErr {
    match e {
        FenceError::Stale { key, token, stored } => raise(
            py,
            "StaleTokenError",
            message(e),
            vec![
                ("key", obj(py, key.as_str())),
                ("name", py.None()),
                ("holder", py.None()),
                ("token", obj(py, *token)),
                ("stored", obj(py, *stored)),
            ],
        ),
        FenceError::Store(inner) => store_error(py, inner),
        FenceError::Conflict { key, .. } => raise(
            py,
            "ConflictError",
            message(e),
            vec![("key", obj(py, key.as_str()))],
        ),
        other => raise(py, "Error", message(other), vec![]),
    }
}

/// The error a handler run under idempotency failed with.
pub trait HandlerError: StdError {
    /// As a Python exception.
    fn to_py(&self, py: Python<'_>) -> PyErr;
}

impl HandlerError for PyErr {
    fn to_py(&self, py: Python<'_>) -> PyErr {
        self.clone_ref(py)
    }
}

impl HandlerError for std::convert::Infallible {
    fn to_py(&self, _py: Python<'_>) -> PyErr {
        match *self {}
    }
}

/// An idempotency error; the handler's own exception comes out unchanged.
pub fn idempotency_error<E: HandlerError + 'static>(
    py: Python<'_>,
    e: &IdempotencyError<E>,
) -> PyErr {
    let key_of = |key: &str| ("key", obj(py, key));
    match e {
        IdempotencyError::Handler { source, .. } => source.to_py(py),
        IdempotencyError::InProgress { key, age, .. } => raise(
            py,
            "InProgressError",
            message(e),
            vec![key_of(key), ("age", obj(py, age.as_secs_f64()))],
        ),
        IdempotencyError::PayloadMismatch { key, .. } => {
            raise(py, "PayloadMismatchError", message(e), vec![key_of(key)])
        }
        IdempotencyError::NotSaved { key, result, .. } => raise(
            py,
            "NotSavedError",
            message(e),
            vec![
                key_of(key),
                (
                    "result",
                    crate::convert::json_to_py(py, result).unwrap_or_else(|_| py.None()),
                ),
            ],
        ),
        IdempotencyError::Store { source, .. } => store_error_as(py, source, message(e)),
        other => raise(py, kind_class(other.kind()), message(other), vec![]),
    }
}

/// A snapshot error; a build function's exception comes out unchanged.
pub fn snapshot_error(py: Python<'_>, e: &SnapshotError) -> PyErr {
    match e {
        SnapshotError::Build { source, .. } => python_error(py, source.as_ref())
            .unwrap_or_else(|| raise(py, "Error", message(e), vec![])),
        SnapshotError::Shared(inner) => snapshot_error(py, inner),
        SnapshotError::Store(inner) => store_error(py, inner),
        SnapshotError::NotFound { name } | SnapshotError::VersionNotRetained { name, .. } => raise(
            py,
            "NotFoundError",
            message(e),
            vec![("key", obj(py, name.as_str()))],
        ),
        SnapshotError::Conflict { last, .. } => store_error_as(py, last, message(e)),
        other => raise(py, kind_class(other.kind()), message(other), vec![]),
    }
}

/// A tenant-database error; a transaction function's exception comes out unchanged.
pub fn tenantdb_error(py: Python<'_>, e: &TenantDbError) -> PyErr {
    if let Some(p) = python_error(py, e) {
        return p;
    }
    let tenant = |t: &str| vec![("key", obj(py, t))];
    match e {
        TenantDbError::NotFound { tenant: t } => raise(py, "NotFoundError", message(e), tenant(t)),
        TenantDbError::Exists { tenant: t } | TenantDbError::Conflict { tenant: t, .. } => {
            raise(py, "ConflictError", message(e), tenant(t))
        }
        TenantDbError::Sql { .. } => raise(py, "SqlError", message(e), vec![]),
        TenantDbError::LimitExceeded { limit, .. } => raise(
            py,
            "LimitExceededError",
            message(e),
            vec![(
                "which",
                serde_json::to_value(limit)
                    .ok()
                    .and_then(|v| v.as_str().map(|s| obj(py, s)))
                    .unwrap_or_else(|| py.None()),
            )],
        ),
        TenantDbError::Store(inner) => store_error(py, inner),
        other => raise(py, kind_class(other.kind()), message(other), vec![]),
    }
}

/// An accounts error.
pub fn accounts_error(py: Python<'_>, e: &AccountsError) -> PyErr {
    let user = |u: &str| vec![("key", obj(py, u))];
    match e {
        AccountsError::UserAlreadyExists { username } => {
            raise(py, "UserExistsError", message(e), user(username))
        }
        AccountsError::UserNotFound { username } => {
            raise(py, "UserNotFoundError", message(e), user(username))
        }
        AccountsError::InvalidCredentials => {
            raise(py, "InvalidCredentialsError", message(e), vec![])
        }
        AccountsError::Throttled { scope, retry_after } => raise(
            py,
            "ThrottledError",
            message(e),
            vec![
                ("scope", obj(py, *scope)),
                ("retry_after", obj(py, retry_after.as_secs_f64())),
            ],
        ),
        AccountsError::Busy { retry_after, .. } => raise(
            py,
            "BusyError",
            message(e),
            vec![("retry_after", obj(py, retry_after.as_secs_f64()))],
        ),
        AccountsError::Store(inner) => store_error(py, inner),
        AccountsError::Update(inner) => update_error(py, inner),
        other => raise(py, kind_class(other.kind()), message(other), vec![]),
    }
}

/// `InvalidInputError` for a bad argument detected while converting it.
pub fn invalid_input(py: Python<'_>, text: impl Into<String>) -> PyErr {
    raise(py, "InvalidInputError", text.into(), vec![])
}

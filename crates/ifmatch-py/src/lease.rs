//! `Store.lease`: a lease as a context manager, and fenced writes.
//!
//! `with store.lease("name", ttl=30) as lease:` runs the library's
//! [`Leases::with_lease`] in a task on the module's runtime: it acquires the
//! lease, renews it every third of the TTL while the block runs, and releases
//! it when the block is left. The block sees the [`LeaseGuard`]: its token,
//! and whether the lease is still held. A use of the lease after it was lost
//! (`fenced_put`, `check`, leaving the block normally) raises `LeaseLostError`.

use std::sync::Mutex;
use std::time::Duration;

use ifmatch::lease::{LeaseError, LeaseGuard, LeaseStatus, Leases};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::convert::{bytes_to_py, epoch_seconds, seconds};
use crate::errors::{fence_error, invalid_input, lease_error, lease_lost};
use crate::options::Context;
use crate::runtime::{block, runtime};

/// A lease while its block runs.
struct Held {
    guard: LeaseGuard,
    done: oneshot::Sender<()>,
    task: JoinHandle<Result<(), LeaseError>>,
}

/// A named lease with a TTL, renewed in the background while held; see the module docs.
#[pyclass(module = "ifmatch", frozen)]
pub struct Lease {
    ctx: Context,
    leases: Leases,
    name: String,
    ttl: Duration,
    wait: Duration,
    held: Mutex<Option<Held>>,
}

impl Lease {
    /// A lease on `name` (not yet acquired: that happens on entering the block).
    pub fn new(ctx: &Context, name: &str, ttl: f64, wait: f64) -> PyResult<Lease> {
        Ok(Lease {
            leases: Leases::new(ctx.store.clone()).with_retry(ctx.default_policy()),
            ctx: ctx.clone(),
            name: name.to_string(),
            ttl: seconds(ttl, "ttl")?,
            wait: seconds(wait, "wait")?,
            held: Mutex::new(None),
        })
    }

    fn with_guard<T>(&self, py: Python<'_>, f: impl FnOnce(&LeaseGuard) -> T) -> PyResult<T> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        match held.as_ref() {
            Some(h) => Ok(f(&h.guard)),
            None => Err(invalid_input(
                py,
                format!(
                    "lease '{}' is not held: use it in a `with` block",
                    self.name
                ),
            )),
        }
    }

    /// `LeaseLostError` if the guard says the lease is no longer held.
    fn lost_error(&self, py: Python<'_>, status: &LeaseStatus) -> Option<PyErr> {
        match status {
            LeaseStatus::Held { .. } => None,
            LeaseStatus::Lost { holder, found } => Some(lease_lost(
                py,
                &self.name,
                holder.as_deref(),
                format!(
                    "lease '{}' was lost: the record now says {found}",
                    self.name
                ),
            )),
            LeaseStatus::Unavailable { message, .. } => Some(lease_lost(
                py,
                &self.name,
                None,
                format!(
                    "lease '{}' may be lost: it could not be renewed in time ({message})",
                    self.name
                ),
            )),
            LeaseStatus::Released => Some(lease_lost(
                py,
                &self.name,
                None,
                format!("lease '{}' was released", self.name),
            )),
        }
    }
}

#[pymethods]
impl Lease {
    /// Acquires the lease (waiting up to `wait` seconds); `LeaseHeldError` if
    /// another worker kept it that long.
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        let py = slf.py();
        let this = slf.get();
        if this
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return Err(invalid_input(
                py,
                format!("lease '{}' is already held", this.name),
            ));
        }
        let (guard_tx, guard_rx) = oneshot::channel::<LeaseGuard>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let leases = this.leases.clone();
        let (name, ttl, wait) = (this.name.clone(), this.ttl, this.wait);
        let task = runtime().spawn(async move {
            leases
                .with_lease(&name, ttl, wait, move |guard| async move {
                    // The block runs until __exit__ says so.
                    let _ = guard_tx.send(guard);
                    let _ = done_rx.await;
                })
                .await
        });
        let started = block(py, async move {
            match guard_rx.await {
                Ok(guard) => Ok((guard, task)),
                Err(_) => Err(task.await),
            }
        });
        match started {
            Ok((guard, task)) => {
                *this.held.lock().unwrap_or_else(|e| e.into_inner()) = Some(Held {
                    guard,
                    done: done_tx,
                    task,
                });
                Ok(slf)
            }
            Err(Ok(Err(e))) => Err(lease_error(py, &e)),
            Err(Ok(Ok(()))) | Err(Err(_)) => Err(invalid_input(
                py,
                format!("lease '{}': the lease task ended unexpectedly", this.name),
            )),
        }
    }

    /// Releases the lease (unless another worker took it over). Leaving the
    /// block normally after the lease was lost raises `LeaseLostError`.
    #[pyo3(signature = (exc_type=None, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let Some(held) = self.held.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(false);
        };
        let lost = self.lost_error(py, &held.guard.status());
        let _ = held.done.send(());
        let task = held.task;
        let finished = block(py, task);
        if let Ok(Err(e)) = &finished {
            return Err(lease_error(py, e));
        }
        match (exc_type.is_some_and(|t| !t.is_none()), lost) {
            (false, Some(e)) => Err(e),
            _ => Ok(false),
        }
    }

    /// The lease name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The fencing token: greater than every token handed out before for this name.
    #[getter]
    fn token(&self, py: Python<'_>) -> PyResult<u64> {
        self.with_guard(py, |g| g.token())
    }

    /// This holder's owner id.
    #[getter]
    fn owner(&self, py: Python<'_>) -> PyResult<String> {
        self.with_guard(py, |g| g.owner().to_string())
    }

    /// True while the lease is held (renewals succeeding).
    #[getter]
    fn held(&self) -> bool {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.as_ref().is_some_and(|h| h.guard.is_held())
    }

    /// When the lease expires unless renewed (seconds since the epoch), while held.
    #[getter]
    fn expires_at(&self, py: Python<'_>) -> PyResult<Option<f64>> {
        self.with_guard(py, |g| match g.status() {
            LeaseStatus::Held { expires_at } => Some(epoch_seconds(expires_at)),
            _ => None,
        })
    }

    /// Raises `LeaseLostError` if the lease is no longer held.
    fn check(&self, py: Python<'_>) -> PyResult<()> {
        let status = self.with_guard(py, |g| g.status())?;
        match self.lost_error(py, &status) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits until the lease stops being held, at most `timeout` seconds
    /// (None: no limit). Returns True if it was lost, False on timeout.
    #[pyo3(signature = (timeout=None))]
    fn wait_lost(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let guard = self.with_guard(py, |g| g.clone())?;
        let timeout = timeout.map(|t| seconds(t, "timeout")).transpose()?;
        Ok(block(py, async move {
            match timeout {
                Some(t) => tokio::time::timeout(t, guard.lost()).await.is_ok(),
                None => {
                    guard.lost().await;
                    true
                }
            }
        }))
    }

    /// Writes `body` to `key` with this lease's fencing token, unless the value
    /// was written with a newer token (`StaleTokenError`, a `LeaseLostError`).
    /// Returns the new version. Read it back with `Store.fenced_get`.
    #[pyo3(signature = (key, body, *, metadata=None))]
    fn fenced_put(
        &self,
        py: Python<'_>,
        key: &str,
        body: &Bound<'_, PyAny>,
        metadata: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<String> {
        self.check(py)?;
        let token = self.with_guard(py, |g| g.token())?;
        let data = crate::convert::body(body)?;
        let md = crate::convert::metadata(metadata)?;
        let store = self.ctx.store.clone();
        let policy = self.ctx.default_policy();
        let v = block(py, async move {
            ifmatch::lease::fenced_put(&*store, key, data, token, md, &policy).await
        })
        .map_err(|e| fence_error(py, &e))?;
        Ok(v.to_string())
    }

    fn __repr__(&self) -> String {
        format!("ifmatch.Lease({:?}, held={})", self.name, self.held())
    }
}

/// A value written by `fenced_put`: its bytes, the token it was written with, and its version.
#[pyclass(module = "ifmatch", frozen)]
pub struct FencedValue {
    body: Py<PyAny>,
    /// The token (None for a value not written by `fenced_put`).
    #[pyo3(get)]
    token: Option<u64>,
    /// The version of the stored value.
    #[pyo3(get)]
    version: String,
}

#[pymethods]
impl FencedValue {
    /// The bytes given to `fenced_put`.
    #[getter]
    fn body(&self, py: Python<'_>) -> Py<PyAny> {
        self.body.clone_ref(py)
    }
    fn __repr__(&self) -> String {
        format!(
            "ifmatch.FencedValue(token={:?}, version={:?})",
            self.token, self.version
        )
    }
}

/// Reads a fenced value.
pub fn fenced_get(py: Python<'_>, ctx: &Context, key: &str) -> PyResult<FencedValue> {
    let store = ctx.store.clone();
    let v = block(
        py,
        async move { ifmatch::lease::fenced_get(&*store, key).await },
    )
    .map_err(|e| fence_error(py, &e))?;
    Ok(FencedValue {
        body: bytes_to_py(py, &v.body),
        token: v.token,
        version: v.meta.version.to_string(),
    })
}

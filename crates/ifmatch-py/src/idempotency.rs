//! `ifmatch.Idempotency`: run a function once per key, however often it is
//! called with that key. The `@ifmatch.idempotent` decorator (in
//! `ifmatch/__init__.py`) is a thin wrapper over [`Idempotency::run`].
//!
//! Everything is the library's [`ifmatch::idempotency::Idempotency`]: the
//! claim with a create-if-absent write, the stored result for duplicates,
//! the payload hash, the stale-claim takeover and the optional wait. The
//! function is called with the GIL held on the calling thread; its result
//! is stored as JSON (a result that is not JSON-serialisable raises
//! `TypeError` and releases the claim), and an exception it raises releases
//! the claim and propagates unchanged.

use ifmatch::idempotency::{Idempotency as LibIdempotency, IdempotencyError, RecordState};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::Value;

use crate::convert::{epoch_seconds, json_to_py, py_to_json, seconds};
use crate::errors::idempotency_error;
use crate::options::Context;
use crate::runtime::{block, call_python};
use crate::store::Store;

/// Idempotency records in a store; see the module docs.
#[pyclass(module = "ifmatch", frozen)]
pub struct Idempotency {
    inner: LibIdempotency,
}

#[pymethods]
impl Idempotency {
    /// Records in `store` (under `prefix`, default `idempotency/`): results are
    /// kept `expires_after` seconds; a claim older than `in_progress_timeout`
    /// seconds may be taken over; a concurrent duplicate waits up to `wait`
    /// seconds for the result (polling about every `poll`), or raises
    /// `InProgressError` at once when `wait` is None. `cache` keeps that many
    /// results in process.
    #[new]
    #[pyo3(signature = (store, *, expires_after=3600.0, in_progress_timeout=600.0, wait=None, poll=0.2, prefix=None, cache=0))]
    fn new(
        store: PyRef<'_, Store>,
        expires_after: f64,
        in_progress_timeout: f64,
        wait: Option<f64>,
        poll: f64,
        prefix: Option<String>,
        cache: usize,
    ) -> PyResult<Self> {
        let ctx: &Context = &store.ctx;
        let mut inner = LibIdempotency::new(ctx.store.clone())
            .with_retry(ctx.default_policy())
            .with_completed_ttl(seconds(expires_after, "expires_after")?)
            .with_in_progress_timeout(seconds(in_progress_timeout, "in_progress_timeout")?)
            .with_cache(cache);
        if let Some(w) = wait {
            inner = inner.with_wait(seconds(w, "wait")?, seconds(poll, "poll")?);
        }
        if let Some(p) = prefix {
            inner = inner.with_prefix(p);
        }
        Ok(Idempotency { inner })
    }

    /// Calls `func()` once for `key` and stores its result; a later call with
    /// the same key returns the stored result without calling `func`.
    /// `payload` (JSON-serialisable) is what the key stands for: the same key
    /// with another payload raises `PayloadMismatchError`.
    #[pyo3(signature = (key, payload, func))]
    fn run(
        &self,
        py: Python<'_>,
        key: &str,
        payload: &Bound<'_, PyAny>,
        func: Py<PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let payload = py_to_json(payload, "the idempotency payload")?;
        let what = format!("the result for idempotency key '{key}'");
        let handler = || async {
            call_python(|py| -> PyResult<Value> {
                let result = func.bind(py).call0()?;
                py_to_json(&result, &what)
            })
        };
        let inner = &self.inner;
        let outcome = block(py, async move { inner.run(key, &payload, handler).await })
            .map_err(|e: IdempotencyError<PyErr>| idempotency_error(py, &e))?;
        json_to_py(py, outcome.value())
    }

    /// What the record of `key` says (a dict: state, payload_hash, result,
    /// claimed_at, expires_at, version), or None if there is none.
    fn inspect(&self, py: Python<'_>, key: &str) -> PyResult<Option<Py<PyDict>>> {
        let inner = &self.inner;
        let info = block(py, async move { inner.inspect(key).await })
            .map_err(|e| idempotency_error(py, &e))?;
        let Some(info) = info else { return Ok(None) };
        let d = PyDict::new(py);
        d.set_item("key", &info.key)?;
        d.set_item(
            "state",
            match info.state {
                RecordState::InProgress => "in_progress",
                RecordState::Completed => "completed",
            },
        )?;
        d.set_item("payload_hash", &info.payload_hash)?;
        d.set_item(
            "result",
            match &info.result {
                Some(v) => json_to_py(py, v)?,
                None => py.None(),
            },
        )?;
        d.set_item("claimed_at", epoch_seconds(info.claimed_at))?;
        d.set_item("expires_at", epoch_seconds(info.expires_at))?;
        d.set_item("version", info.version.as_str())?;
        Ok(Some(d.unbind()))
    }
}

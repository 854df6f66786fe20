//! `ifmatch.open(url)` and `Store`: conditional reads and writes on versioned keys.
//!
//! Each method is one call of the library's [`ifmatch::Store`] trait, run with
//! the GIL released. The primitives built on a store (the update loop,
//! leases, snapshots) are reached from a `Store` too; their bindings live in
//! their own modules and the methods here only hand over.

use std::sync::{Arc, Mutex};

use ifmatch::store::prefix::PrefixStore;
use ifmatch::store::{Fetch, ListEntry as LibListEntry, ListPage, Metadata, ObjectMeta as LibMeta};
use ifmatch::{Condition, Object as LibObject, PutOptions, Version};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::clock::ManualClock;
use crate::convert::bytes_to_py;
use crate::errors::{invalid_input, store_error};
use crate::options::{Context, RetryPolicy};
use crate::runtime::block;

/// Opens the store at `url`: `file://DIR` (or a bare path), `memory://`,
/// `s3://BUCKET[/PREFIX][?endpoint=URL&region=R]` or `dynamodb://TABLE[?create=true&...]`.
#[pyfunction]
#[pyo3(signature = (url, *, clock=None, seed=None, retry=None))]
pub fn open(
    py: Python<'_>,
    url: &str,
    clock: Option<PyRef<'_, ManualClock>>,
    seed: Option<u64>,
    retry: Option<PyRef<'_, RetryPolicy>>,
) -> PyResult<Store> {
    let owned = url.to_string();
    let store = block(py, async move { ifmatch::store::open(&owned).await })
        .map_err(|e| store_error(py, &e))?;
    let ctx =
        Context::new(store).with(clock.map(|c| c.dyn_clock()), seed, retry.map(|r| r.clone()));
    Ok(Store {
        ctx,
        url: url.to_string(),
    })
}

/// A handle on a store; cheap to share between threads.
#[pyclass(module = "ifmatch", frozen)]
pub struct Store {
    pub(crate) ctx: Context,
    url: String,
}

impl Store {
    /// A handle on the same store with `ctx`.
    pub(crate) fn with_context(&self, ctx: Context) -> Store {
        Store {
            ctx,
            url: self.url.clone(),
        }
    }
}

fn condition(py: Python<'_>, if_match: Option<String>, if_absent: bool) -> PyResult<Condition> {
    match (if_match, if_absent) {
        (Some(_), true) => Err(invalid_input(py, "give if_match or if_absent, not both")),
        (Some(v), false) => Ok(Condition::Matches(Version::new(v))),
        (None, true) => Ok(Condition::Absent),
        (None, false) => Ok(Condition::Any),
    }
}

#[pymethods]
impl Store {
    /// The URL the store was opened with.
    #[getter]
    fn url(&self) -> &str {
        &self.url
    }

    /// A handle on the same store with another clock, seed or retry budget.
    #[pyo3(signature = (*, clock=None, seed=None, retry=None))]
    fn with_options(
        &self,
        clock: Option<PyRef<'_, ManualClock>>,
        seed: Option<u64>,
        retry: Option<PyRef<'_, RetryPolicy>>,
    ) -> Store {
        self.with_context(self.ctx.with(
            clock.map(|c| c.dyn_clock()),
            seed,
            retry.map(|r| r.clone()),
        ))
    }

    /// A handle on the keys under `prefix/` in this store, so that several
    /// applications or test runs can share one bucket or table.
    fn prefixed(&self, py: Python<'_>, prefix: &str) -> PyResult<Store> {
        let inner =
            PrefixStore::new(self.ctx.store.clone(), prefix).map_err(|e| store_error(py, &e))?;
        let mut ctx = self.ctx.clone();
        ctx.store = Arc::new(inner);
        Ok(Store {
            ctx,
            url: format!("{} (under {prefix}/)", self.url),
        })
    }

    /// The value of `key` with its version and metadata; `NotFoundError` if absent.
    fn get(&self, py: Python<'_>, key: &str) -> PyResult<Object> {
        let store = self.ctx.store.clone();
        let obj =
            block(py, async move { store.get(key).await }).map_err(|e| store_error(py, &e))?;
        Ok(Object::new(py, obj))
    }

    /// The value of `key` if its version is no longer `version` (a conditional
    /// GET); `None` if unchanged.
    fn get_if_changed(&self, py: Python<'_>, key: &str, version: &str) -> PyResult<Option<Object>> {
        let store = self.ctx.store.clone();
        let known = Version::new(version);
        let fetched = block(py, async move { store.get_if_changed(key, &known).await })
            .map_err(|e| store_error(py, &e))?;
        Ok(match fetched {
            Fetch::Unchanged => None,
            Fetch::Changed(o) => Some(Object::new(py, o)),
        })
    }

    /// Version, size and metadata of `key`, without its value.
    fn head(&self, py: Python<'_>, key: &str) -> PyResult<ObjectMeta> {
        let store = self.ctx.store.clone();
        let meta =
            block(py, async move { store.head(key).await }).map_err(|e| store_error(py, &e))?;
        Ok(ObjectMeta::from(meta))
    }

    /// Writes `body` (bytes or str) to `key` and returns the new version.
    ///
    /// `if_match=V`: only while the key is at version V; `if_absent=True`:
    /// only if the key does not exist. Otherwise `ConflictError`.
    #[pyo3(signature = (key, body, *, if_match=None, if_absent=false, metadata=None, expires_at=None))]
    #[allow(clippy::too_many_arguments)]
    fn put(
        &self,
        py: Python<'_>,
        key: &str,
        body: &Bound<'_, PyAny>,
        if_match: Option<String>,
        if_absent: bool,
        metadata: Option<&Bound<'_, PyDict>>,
        expires_at: Option<u64>,
    ) -> PyResult<String> {
        let data = crate::convert::body(body)?;
        let opts = PutOptions {
            condition: condition(py, if_match, if_absent)?,
            metadata: crate::convert::metadata(metadata)?,
            expires_at,
        };
        let store = self.ctx.store.clone();
        let v = block(py, async move { store.put(key, data, opts).await })
            .map_err(|e| store_error(py, &e))?;
        Ok(v.to_string())
    }

    /// Deletes `key` (only while at version `if_match`, if given).
    #[pyo3(signature = (key, *, if_match=None))]
    fn delete(&self, py: Python<'_>, key: &str, if_match: Option<String>) -> PyResult<()> {
        let cond = condition(py, if_match, false)?;
        let store = self.ctx.store.clone();
        block(py, async move { store.delete(key, cond).await }).map_err(|e| store_error(py, &e))
    }

    /// An iterator over pages (lists of `ListEntry`) of the keys under `prefix`
    /// (in key order; on DynamoDB in its scan order).
    #[pyo3(signature = (prefix="", *, page_size=1000))]
    fn list(&self, prefix: &str, page_size: usize) -> ListPages {
        ListPages {
            ctx: self.ctx.clone(),
            prefix: prefix.to_string(),
            limit: page_size,
            next: Mutex::new(Some(None)),
        }
    }

    /// Reads `key` as JSON, applies `fn` to it (`None` if absent) and writes
    /// the result with `If-Match`; on a conflict re-reads and calls `fn` again
    /// (so `fn` may run more than once). Returning `None` deletes the key.
    /// Returns the value now stored. An exception from `fn` propagates unchanged.
    fn update_json(&self, py: Python<'_>, key: &str, func: Py<PyAny>) -> PyResult<Py<PyAny>> {
        crate::update::update_json(py, &self.ctx, key, func)
    }

    /// A lease on `name` for `ttl` seconds, to use in a `with` block.
    #[pyo3(signature = (name, ttl=30.0, *, wait=0.0))]
    fn lease(&self, name: &str, ttl: f64, wait: f64) -> PyResult<crate::lease::Lease> {
        crate::lease::Lease::new(&self.ctx, name, ttl, wait)
    }

    /// Reads a value written by `Lease.fenced_put`, without its fencing header.
    fn fenced_get(&self, py: Python<'_>, key: &str) -> PyResult<crate::lease::FencedValue> {
        crate::lease::fenced_get(py, &self.ctx, key)
    }

    /// Snapshots in this store, with the default settings.
    #[getter]
    fn snapshots(&self) -> crate::snapshot::Snapshots {
        crate::snapshot::Snapshots::with_defaults(&self.ctx)
    }

    fn __repr__(&self) -> String {
        format!("ifmatch.Store({:?})", self.url)
    }
}

/// What a key holds: its value, version, size, metadata and expiry.
#[pyclass(module = "ifmatch", frozen)]
pub struct Object {
    meta: ObjectMeta,
    body: Py<PyAny>,
}

impl Object {
    fn new(py: Python<'_>, o: LibObject) -> Self {
        Object {
            body: bytes_to_py(py, &o.body),
            meta: ObjectMeta::from(o.meta),
        }
    }
}

#[pymethods]
impl Object {
    /// The value.
    #[getter]
    fn body(&self, py: Python<'_>) -> Py<PyAny> {
        self.body.clone_ref(py)
    }
    /// The key.
    #[getter]
    fn key(&self) -> &str {
        &self.meta.key
    }
    /// The version (opaque).
    #[getter]
    fn version(&self) -> &str {
        &self.meta.version
    }
    /// The size in bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.meta.size
    }
    /// The metadata.
    #[getter]
    fn metadata(&self) -> Metadata {
        self.meta.metadata.clone()
    }
    /// The expiry (seconds since the epoch), if any.
    #[getter]
    fn expires_at(&self) -> Option<u64> {
        self.meta.expires_at
    }
    /// The value decoded as UTF-8.
    fn text(&self, py: Python<'_>) -> PyResult<String> {
        self.body
            .bind(py)
            .call_method1("decode", ("utf-8",))?
            .extract()
    }
    /// The value parsed as JSON.
    fn json(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        crate::convert::json_loads(py, &self.body)
    }
    fn __repr__(&self) -> String {
        format!(
            "ifmatch.Object(key={:?}, version={:?}, size={})",
            self.meta.key, self.meta.version, self.meta.size
        )
    }
}

/// A key's version, size, metadata and expiry, without its value.
#[pyclass(module = "ifmatch", frozen, get_all)]
#[derive(Clone)]
pub struct ObjectMeta {
    /// The key.
    pub key: String,
    /// The version (opaque).
    pub version: String,
    /// The size in bytes.
    pub size: u64,
    /// The metadata.
    pub metadata: Metadata,
    /// The expiry (seconds since the epoch), if any.
    pub expires_at: Option<u64>,
}

impl From<LibMeta> for ObjectMeta {
    fn from(m: LibMeta) -> Self {
        ObjectMeta {
            key: m.key,
            version: m.version.to_string(),
            size: m.size,
            metadata: m.metadata,
            expires_at: m.expires_at,
        }
    }
}

#[pymethods]
impl ObjectMeta {
    fn __repr__(&self) -> String {
        format!(
            "ifmatch.ObjectMeta(key={:?}, version={:?}, size={})",
            self.key, self.version, self.size
        )
    }
}

/// One key in a listing.
#[pyclass(module = "ifmatch", frozen, get_all)]
pub struct ListEntry {
    /// The key.
    pub key: String,
    /// Its version.
    pub version: String,
    /// Its size in bytes.
    pub size: u64,
}

impl From<LibListEntry> for ListEntry {
    fn from(e: LibListEntry) -> Self {
        ListEntry {
            key: e.key,
            version: e.version.to_string(),
            size: e.size,
        }
    }
}

#[pymethods]
impl ListEntry {
    fn __repr__(&self) -> String {
        format!(
            "ifmatch.ListEntry(key={:?}, version={:?}, size={})",
            self.key, self.version, self.size
        )
    }
}

/// The pages of a listing, fetched one at a time as the iteration goes.
#[pyclass(module = "ifmatch", frozen)]
pub struct ListPages {
    ctx: Context,
    prefix: String,
    limit: usize,
    /// `Some(token)` while pages remain (`Some(None)`: the first); `None` when done.
    next: Mutex<Option<Option<String>>>,
}

#[pymethods]
impl ListPages {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyList>>> {
        let token = {
            let guard = self.next.lock().unwrap_or_else(|e| e.into_inner());
            match guard.as_ref() {
                None => return Ok(None),
                Some(t) => t.clone(),
            }
        };
        let store = self.ctx.store.clone();
        let page = ListPage {
            token,
            limit: self.limit,
        };
        let prefix = self.prefix.as_str();
        let result = block(py, async move { store.list(prefix, page).await })
            .map_err(|e| store_error(py, &e))?;
        *self.next.lock().unwrap_or_else(|e| e.into_inner()) = result.next.map(Some);
        let entries: Vec<ListEntry> = result.entries.into_iter().map(ListEntry::from).collect();
        Ok(Some(PyList::new(py, entries)?.unbind()))
    }
}

//! `Store.snapshots`: publish derived artifacts as version n+1, and read the
//! latest through a single-flight cache.
//!
//! [`ifmatch::snapshot::Snapshots::publish`] calls the Python build function
//! (with the GIL, on the publishing thread) for each attempt, commits with
//! compare-and-swap and stops when a fresher build landed first. A
//! [`ifmatch::snapshot::SnapshotReader`] checks the store at most once per
//! interval, shares one refresh among concurrent callers and serves the last
//! good copy, marked stale, while the store is unavailable.

use std::sync::Arc;

use bytes::Bytes;
use ifmatch::error::BoxError;
use ifmatch::snapshot::{
    BuildContext as LibBuildContext, PublishOutcome as LibOutcome, Served as LibServed,
    Snapshot as LibSnapshot, SnapshotConfig, SnapshotReader as LibReader,
    Snapshots as LibSnapshots,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::convert::{body, bytes_to_py, epoch_seconds, seconds};
use crate::errors::snapshot_error;
use crate::options::Context;
use crate::runtime::{block, call_python};
use crate::store::Store;

/// The snapshots in a store.
#[pyclass(module = "ifmatch", frozen)]
pub struct Snapshots {
    inner: LibSnapshots,
}

impl Snapshots {
    fn build(ctx: &Context, config: SnapshotConfig) -> Snapshots {
        let policy = ctx.policy(config.policy.clone());
        Snapshots {
            inner: LibSnapshots::with_config(ctx.store.clone(), config.with_policy(policy)),
        }
    }

    /// Snapshots with the library's default settings.
    pub fn with_defaults(ctx: &Context) -> Snapshots {
        Self::build(ctx, SnapshotConfig::default())
    }
}

#[pymethods]
impl Snapshots {
    /// Snapshots in `store` under `prefix` (default `snapshots`), keeping the
    /// last `keep` versions; readers check for a new version at most every
    /// `check_interval` seconds.
    #[new]
    #[pyo3(signature = (store, *, prefix=None, keep=5, check_interval=5.0))]
    fn new(
        store: PyRef<'_, Store>,
        prefix: Option<String>,
        keep: usize,
        check_interval: f64,
    ) -> PyResult<Self> {
        let mut config = SnapshotConfig::default()
            .with_keep(keep)
            .with_check_interval(seconds(check_interval, "check_interval")?);
        if let Some(p) = prefix {
            config = config.with_prefix(p);
        }
        Ok(Self::build(&store.ctx, config))
    }

    /// Builds and publishes a new version of `name`: `build_fn(ctx)` returns
    /// the artifact (bytes or str); `ctx.version` is the version it will be
    /// committed as. It may run more than once, or not at all when a build at
    /// least as fresh lands first. An exception from it propagates unchanged.
    fn publish(&self, py: Python<'_>, name: &str, build_fn: Py<PyAny>) -> PyResult<PublishOutcome> {
        let build = |ctx: LibBuildContext| {
            let built = call_python(|py| -> PyResult<Bytes> {
                let arg = BuildContext {
                    name: ctx.name.clone(),
                    version: ctx.version,
                    previous: ctx.previous,
                    attempt: ctx.attempt,
                };
                body(&build_fn.bind(py).call1((arg,))?)
            });
            std::future::ready(built.map_err(BoxError::from))
        };
        let inner = &self.inner;
        let outcome = block(py, async move { inner.publish(name, build).await })
            .map_err(|e| snapshot_error(py, &e))?;
        Ok(PublishOutcome::from(outcome))
    }

    /// A cached reader of `name`'s latest version (share one per process).
    fn reader(&self, py: Python<'_>, name: &str) -> PyResult<SnapshotReader> {
        let reader = self
            .inner
            .reader(name)
            .map_err(|e| snapshot_error(py, &e))?;
        Ok(SnapshotReader {
            inner: Arc::new(reader),
        })
    }

    /// Version `version` of `name` (the current one for None), read from the store.
    #[pyo3(signature = (name, version=None))]
    fn get(&self, py: Python<'_>, name: &str, version: Option<u64>) -> PyResult<Snapshot> {
        let inner = &self.inner;
        let snap = block(py, async move { inner.get(name, version).await })
            .map_err(|e| snapshot_error(py, &e))?;
        Ok(Snapshot::new(py, &snap))
    }

    /// The retained versions of `name`, newest first, as dicts.
    fn versions(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyList>> {
        let inner = &self.inner;
        let infos = block(py, async move { inner.versions(name).await })
            .map_err(|e| snapshot_error(py, &e))?;
        let out = PyList::empty(py);
        for i in infos {
            let d = PyDict::new(py);
            d.set_item("version", i.version)?;
            d.set_item("size", i.size)?;
            d.set_item("build_started_at", epoch_seconds(i.build_started()))?;
            d.set_item("published_at", epoch_seconds(i.published()))?;
            d.set_item("rolled_back_from", i.rolled_back_from)?;
            out.append(d)?;
        }
        Ok(out.unbind())
    }

    /// Republishes retained version `version` of `name` as a new version; returns its number.
    fn rollback(&self, py: Python<'_>, name: &str, version: u64) -> PyResult<u64> {
        let inner = &self.inner;
        let published = block(py, async move { inner.rollback(name, version).await })
            .map_err(|e| snapshot_error(py, &e))?;
        Ok(published.version())
    }
}

/// What a build function is told about the version it builds.
#[pyclass(module = "ifmatch", frozen, get_all)]
pub struct BuildContext {
    /// The snapshot name.
    name: String,
    /// The version this build will be committed as, if it wins.
    version: u64,
    /// The version it builds on (None for the first).
    previous: Option<u64>,
    /// Which attempt this is (1 for the first).
    attempt: u32,
}

/// What a publish did.
#[pyclass(module = "ifmatch", frozen, get_all)]
pub struct PublishOutcome {
    /// True if this build was committed; False if a build at least as fresh landed first.
    published: bool,
    /// The version now current because of this publish: ours, or the one that superseded it.
    version: u64,
    /// Attempts made.
    attempts: u32,
    /// Conflicts met.
    conflicts: u32,
}

impl From<LibOutcome> for PublishOutcome {
    fn from(o: LibOutcome) -> Self {
        match o {
            LibOutcome::Published(p) => PublishOutcome {
                published: true,
                version: p.version(),
                attempts: p.attempts,
                conflicts: p.conflicts,
            },
            LibOutcome::Superseded {
                by,
                attempts,
                conflicts,
            } => PublishOutcome {
                published: false,
                version: by,
                attempts,
                conflicts,
            },
        }
    }
}

#[pymethods]
impl PublishOutcome {
    fn __repr__(&self) -> String {
        format!(
            "ifmatch.PublishOutcome(published={}, version={})",
            if self.published { "True" } else { "False" },
            self.version
        )
    }
}

/// One snapshot version: its number and bytes.
#[pyclass(module = "ifmatch", frozen)]
pub struct Snapshot {
    /// The snapshot name.
    #[pyo3(get)]
    name: String,
    /// The version number.
    #[pyo3(get)]
    version: u64,
    body: Py<PyAny>,
}

impl Snapshot {
    fn new(py: Python<'_>, s: &LibSnapshot) -> Self {
        Snapshot {
            name: s.name.clone(),
            version: s.version(),
            body: bytes_to_py(py, &s.body),
        }
    }
}

#[pymethods]
impl Snapshot {
    /// The artifact.
    #[getter]
    fn body(&self, py: Python<'_>) -> Py<PyAny> {
        self.body.clone_ref(py)
    }
}

/// An in-process cache of a snapshot's latest version; see the module docs.
#[pyclass(module = "ifmatch", frozen)]
pub struct SnapshotReader {
    inner: Arc<LibReader>,
}

#[pymethods]
impl SnapshotReader {
    /// The latest version: from memory if checked within the interval, else
    /// after one shared conditional check; the last good copy (with `stale`
    /// set) when the store fails.
    fn latest(&self, py: Python<'_>) -> PyResult<Served> {
        let inner = self.inner.clone();
        let served =
            block(py, async move { inner.latest().await }).map_err(|e| snapshot_error(py, &e))?;
        Ok(Served::new(py, served))
    }

    /// Like `latest`, but checks the store now (still shared with concurrent callers).
    fn refresh(&self, py: Python<'_>) -> PyResult<Served> {
        let inner = self.inner.clone();
        let served =
            block(py, async move { inner.refresh().await }).map_err(|e| snapshot_error(py, &e))?;
        Ok(Served::new(py, served))
    }

    /// The reader's counters (checks, downloads, stale_served, ...).
    fn metrics(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.inner.metrics().to_map()
    }
}

/// A snapshot served by a reader.
#[pyclass(module = "ifmatch", frozen)]
pub struct Served {
    body: Py<PyAny>,
    /// The version it comes from.
    #[pyo3(get)]
    version: u64,
    /// Seconds since the store last confirmed this was the latest version.
    #[pyo3(get)]
    age: f64,
    /// None, or why the last check failed (the value is then the last good one).
    #[pyo3(get)]
    stale: Option<String>,
}

impl Served {
    fn new(py: Python<'_>, s: LibServed<LibSnapshot>) -> Self {
        Served {
            body: bytes_to_py(py, &s.value.body),
            version: s.version,
            age: s.age.as_secs_f64(),
            stale: s.stale.map(|e| e.to_string()),
        }
    }
}

#[pymethods]
impl Served {
    /// The artifact.
    #[getter]
    fn body(&self, py: Python<'_>) -> Py<PyAny> {
        self.body.clone_ref(py)
    }
    /// The artifact parsed as JSON.
    fn json(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        crate::convert::json_loads(py, &self.body)
    }
    fn __repr__(&self) -> String {
        format!(
            "ifmatch.Served(version={}, stale={})",
            self.version,
            self.stale.is_some()
        )
    }
}

//! `ifmatch.TenantDbs`: one SQLite database per tenant, in the store, through
//! a local cache (the library's [`ifmatch::tenantdb`]).
//!
//! `dbs.write(tenant, fn)` and `dbs.read(tenant, fn)` call `fn(tx)` with the
//! GIL held on the blocking thread where the library runs the SQLite work;
//! `tx.execute` and `tx.query` run statements on that thread's connection.
//! As in Rust, a write's `fn` may run more than once (after losing a commit
//! race) and should only touch the database. An exception from `fn` rolls
//! the transaction back, uploads nothing, and propagates unchanged.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ifmatch::tenantdb::{SchemaHook, TenantDbError, TenantDbs as LibTenantDbs, TenantDbsConfig};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::convert::{json_to_py, py_to_json, seconds, sql_to_py, sql_value};
use crate::errors::tenantdb_error;
use crate::runtime::{block, call_python};
use crate::store::Store;

/// Tenant databases in a store, with a local cache; see the module docs.
#[pyclass(module = "ifmatch", frozen)]
pub struct TenantDbs {
    inner: LibTenantDbs,
}

/// A schema hook from SQL text or a Python function of a `Tx`.
fn schema_hook(py: Python<'_>, schema: Py<PyAny>) -> SchemaHook {
    if let Ok(sql) = schema.bind(py).cast::<PyString>().map(|s| s.to_string()) {
        return Arc::new(move |tx| tx.execute_batch(&sql));
    }
    Arc::new(move |tx| {
        with_tx(tx, false, |py, handle| {
            schema.bind(py).call1((handle,)).map(drop)
        })
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    })
}

/// Calls `f` with a `Tx` on `conn`, valid only for the duration of the call.
fn with_tx<R>(
    conn: &rusqlite::Connection,
    read_only: bool,
    f: impl FnOnce(Python<'_>, &Bound<'_, Tx>) -> PyResult<R>,
) -> PyResult<R> {
    call_python(|py| {
        let handle = Bound::new(
            py,
            Tx {
                conn: Mutex::new(Some(Loan {
                    conn: conn as *const rusqlite::Connection,
                    thread: std::thread::current().id(),
                })),
                read_only,
            },
        )?;
        let out = f(py, &handle);
        // The connection is only borrowed for this call: a Tx kept beyond it is closed.
        *handle.get().conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
        out
    })
}

#[pymethods]
impl TenantDbs {
    /// Tenant databases of `store`, cached in `cache_dir` (one process at a
    /// time per directory). `schema` creates a new tenant's tables: SQL text,
    /// or a function of a `Tx`. `max_staleness` (seconds) lets reads skip
    /// the freshness check for that long; `cache_budget` bounds the cache in
    /// bytes; `gc_grace` (seconds) is how long superseded log entries stay.
    /// `max_commit_bytes` (default 64 MiB) bounds the page bytes one commit
    /// may change and `max_tenant_bytes` (default 1 GiB) the size a tenant
    /// database may grow to: past either, the commit raises
    /// `LimitExceededError` (`which` names the limit) before anything is uploaded.
    #[new]
    #[pyo3(signature = (store, cache_dir, *, schema=None, max_staleness=0.0, cache_budget=None, checkpoint_every=None, gc_grace=None, prefix=None, max_commit_bytes=None, max_tenant_bytes=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        store: PyRef<'_, Store>,
        cache_dir: PathBuf,
        schema: Option<Py<PyAny>>,
        max_staleness: f64,
        cache_budget: Option<u64>,
        checkpoint_every: Option<u64>,
        gc_grace: Option<f64>,
        prefix: Option<String>,
        max_commit_bytes: Option<u64>,
        max_tenant_bytes: Option<u64>,
    ) -> PyResult<Self> {
        let ctx = &store.ctx;
        let mut cfg = TenantDbsConfig::new(cache_dir)
            .with_max_staleness(seconds(max_staleness, "max_staleness")?)
            .with_clock(ctx.clock.clone());
        cfg = cfg.clone().with_retry(ctx.policy(cfg.retry));
        if let Some(s) = schema {
            cfg = cfg.with_schema(schema_hook(py, s));
        }
        if let Some(b) = cache_budget {
            cfg = cfg.with_cache_budget(b);
        }
        if let Some(n) = checkpoint_every {
            cfg = cfg.with_checkpoint_every(n);
        }
        if let Some(g) = gc_grace {
            cfg = cfg.with_gc_grace(seconds(g, "gc_grace")?);
        }
        if let Some(p) = prefix {
            cfg = cfg.with_prefix(p);
        }
        if let Some(b) = max_commit_bytes {
            cfg = cfg.with_max_commit_bytes(b);
        }
        if let Some(b) = max_tenant_bytes {
            cfg = cfg.with_max_tenant_bytes(b);
        }
        let store = ctx.store.clone();
        let inner = py
            .detach(|| LibTenantDbs::open(store, cfg))
            .map_err(|e| tenantdb_error(py, &e))?;
        Ok(TenantDbs { inner })
    }

    /// Runs `fn(tx)` in a transaction on the tenant's database and commits it
    /// to the store (creating the tenant if needed); returns what `fn` returns.
    /// `fn` may run more than once.
    ///
    /// With `commit_id`, the commit is idempotent: a later call with the same
    /// id for the same tenant that finds that commit landed returns its
    /// stored result without running `fn` (retry with the same id after an
    /// `AmbiguousError`, a timeout or a redelivery). The result must then be
    /// JSON-serialisable, and comes back as JSON.
    #[pyo3(signature = (tenant, func, *, commit_id=None))]
    fn write(
        &self,
        py: Python<'_>,
        tenant: &str,
        func: Py<PyAny>,
        commit_id: Option<&str>,
    ) -> PyResult<Py<PyAny>> {
        let inner = &self.inner;
        let Some(id) = commit_id else {
            let run = move |tx: &rusqlite::Transaction<'_>| {
                with_tx(tx, false, |py, handle| {
                    func.bind(py).call1((handle,)).map(Bound::unbind)
                })
                .map_err(|e| TenantDbError::Aborted(Box::new(e)))
            };
            return block(py, async move { inner.write(tenant, run).await })
                .map_err(|e| tenantdb_error(py, &e));
        };
        let what = format!("the result of a commit with id '{id}'");
        let run = move |tx: &rusqlite::Transaction<'_>| {
            with_tx(tx, false, |py, handle| {
                py_to_json(&func.bind(py).call1((handle,))?, &what)
            })
            .map_err(|e| TenantDbError::Aborted(Box::new(e)))
        };
        let result = block(py, async move { inner.write_once(tenant, id, run).await })
            .map_err(|e| tenantdb_error(py, &e))?;
        json_to_py(py, &result)
    }

    /// Runs `fn(tx)` on a read-only connection to the tenant's current
    /// database; never uploads. `NotFoundError` if the tenant has none.
    fn read(&self, py: Python<'_>, tenant: &str, func: Py<PyAny>) -> PyResult<Py<PyAny>> {
        let inner = &self.inner;
        let run = move |conn: &rusqlite::Connection| {
            with_tx(conn, true, |py, handle| {
                func.bind(py).call1((handle,)).map(Bound::unbind)
            })
            .map_err(|e| TenantDbError::Aborted(Box::new(e)))
        };
        block(py, async move { inner.read(tenant, run).await }).map_err(|e| tenantdb_error(py, &e))
    }

    /// Writes a standalone SQLite file of the tenant's database to `path`.
    fn export(&self, py: Python<'_>, tenant: &str, path: PathBuf) -> PyResult<()> {
        let inner = &self.inner;
        block(py, async move { inner.export(tenant, path).await })
            .map_err(|e| tenantdb_error(py, &e))
    }

    /// Creates the tenant from the SQLite file at `path`; with `force`, replaces an existing database.
    #[pyo3(signature = (tenant, path, *, force=false))]
    fn import_(&self, py: Python<'_>, tenant: &str, path: PathBuf, force: bool) -> PyResult<()> {
        let inner = &self.inner;
        block(py, async move { inner.import(tenant, path, force).await })
            .map_err(|e| tenantdb_error(py, &e))
    }

    /// The tenant's current database: seq, page_size, pages and bytes.
    fn info(&self, py: Python<'_>, tenant: &str) -> PyResult<Py<PyAny>> {
        let inner = &self.inner;
        let info = block(py, async move { inner.info(tenant).await })
            .map_err(|e| tenantdb_error(py, &e))?;
        to_py(py, &info)
    }

    /// Counters: cache hits and misses, commits, conflicts, retries, bytes and requests.
    fn stats(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_py(py, &self.inner.stats())
    }

    /// Waits until the background work queued so far (checkpoints, head
    /// updates, garbage collection) is done. Call it before dropping the
    /// last reference when the cache directory is to be reopened at once
    /// (a job still running keeps it locked until it ends).
    fn flush(&self, py: Python<'_>) {
        let inner = &self.inner;
        block(py, async move { inner.flush().await })
    }

    /// Whether the tenant has a copy in the local cache.
    fn is_cached(&self, tenant: &str) -> bool {
        self.inner.is_cached(tenant)
    }
}

fn to_py(py: Python<'_>, v: &impl serde::Serialize) -> PyResult<Py<PyAny>> {
    let value = serde_json::to_value(v).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    json_to_py(py, &value)
}

/// A connection lent to one Python call, and the thread that call runs on.
struct Loan {
    conn: *const rusqlite::Connection,
    thread: std::thread::ThreadId,
}

// SAFETY: the pointer is only dereferenced by `Tx::conn`, on the thread that
// lent it (checked) and while the loan lasts (`with_tx` takes it back before
// the borrow it was made from ends). Moving or dropping a `Tx` elsewhere
// touches only the pointer value.
unsafe impl Send for Loan {}

/// A connection handed to a `write` or `read` function, valid while it runs.
#[pyclass(module = "ifmatch", frozen)]
pub struct Tx {
    /// The lent connection; None once the function has returned.
    conn: Mutex<Option<Loan>>,
    read_only: bool,
}

impl Tx {
    fn conn(&self) -> PyResult<&rusqlite::Connection> {
        let loan = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        match loan.as_ref() {
            Some(l) if l.thread == std::thread::current().id() => {
                // SAFETY: see `Loan`: on the lending thread, during the loan.
                // The loan ends only after the Python call running this
                // method has returned, so the reference cannot outlive it.
                Ok(unsafe { &*l.conn })
            }
            Some(_) => Err(PyRuntimeError::new_err(
                "tx belongs to the thread running the transaction function: use it only there",
            )),
            None => Err(PyRuntimeError::new_err(
                "this transaction is over: use tx only inside the function it was given to",
            )),
        }
    }

    /// Prepares `sql` (only a read-only statement when `read_only`), binds
    /// `params`, runs it and returns the rows it produced as tuples.
    fn rows(
        &self,
        py: Python<'_>,
        sql: &str,
        params: Option<&Bound<'_, PyAny>>,
        read_only: bool,
    ) -> PyResult<Py<PyList>> {
        let conn = self.conn()?;
        let sqlerr = |e: rusqlite::Error| tenantdb_error(py, &TenantDbError::from(e));
        let mut stmt = conn.prepare(sql).map_err(sqlerr)?;
        if read_only && !stmt.readonly() {
            return Err(crate::errors::invalid_input(
                py,
                format!("query() runs read-only statements; use execute() for {sql:?}"),
            ));
        }
        bind(&mut stmt, params).map_err(|e| match e {
            Bind::Py(e) => e,
            Bind::Sql(e) => sqlerr(e),
        })?;
        let n = stmt.column_count();
        let out = PyList::empty(py);
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next().map_err(sqlerr)? {
            let mut cells = Vec::with_capacity(n);
            for i in 0..n {
                cells.push(sql_to_py(py, row.get_ref(i).map_err(sqlerr)?)?);
            }
            out.append(PyTuple::new(py, cells)?)?;
        }
        Ok(out.unbind())
    }
}

enum Bind {
    Py(PyErr),
    Sql(rusqlite::Error),
}

/// Binds a sequence (positional `?`) or a dict (named `:name`) of parameters.
fn bind(stmt: &mut rusqlite::Statement<'_>, params: Option<&Bound<'_, PyAny>>) -> Result<(), Bind> {
    let Some(params) = params.filter(|p| !p.is_none()) else {
        return Ok(());
    };
    if let Ok(d) = params.cast::<PyDict>() {
        for (k, v) in d.iter() {
            let name: String = k.extract().map_err(Bind::Py)?;
            let name = if name.starts_with([':', '@', '$']) {
                name
            } else {
                format!(":{name}")
            };
            let idx = stmt
                .parameter_index(&name)
                .map_err(Bind::Sql)?
                .ok_or_else(|| Bind::Sql(rusqlite::Error::InvalidParameterName(name.clone())))?;
            stmt.raw_bind_parameter(idx, sql_value(&v).map_err(Bind::Py)?)
                .map_err(Bind::Sql)?;
        }
        return Ok(());
    }
    let mut count = 0;
    for (i, v) in params.try_iter().map_err(Bind::Py)?.enumerate() {
        let v = v.map_err(Bind::Py)?;
        stmt.raw_bind_parameter(i + 1, sql_value(&v).map_err(Bind::Py)?)
            .map_err(Bind::Sql)?;
        count = i + 1;
    }
    if count != stmt.parameter_count() {
        return Err(Bind::Sql(rusqlite::Error::InvalidParameterCount(
            count,
            stmt.parameter_count(),
        )));
    }
    Ok(())
}

#[pymethods]
impl Tx {
    /// Runs one statement with `params` (a sequence for `?`, a dict for
    /// `:name`); returns the rows it produced (e.g. with RETURNING) as tuples.
    #[pyo3(signature = (sql, params=None))]
    fn execute(
        &self,
        py: Python<'_>,
        sql: &str,
        params: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyList>> {
        self.rows(py, sql, params, false)
    }

    /// Runs one read-only statement and returns its rows as tuples.
    #[pyo3(signature = (sql, params=None))]
    fn query(
        &self,
        py: Python<'_>,
        sql: &str,
        params: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyList>> {
        self.rows(py, sql, params, true)
    }

    /// Runs several statements separated by semicolons, without parameters.
    fn executescript(&self, py: Python<'_>, sql: &str) -> PyResult<()> {
        self.conn()?
            .execute_batch(sql)
            .map_err(|e| tenantdb_error(py, &TenantDbError::from(e)))
    }

    /// The rowid of the last row inserted through this connection.
    #[getter]
    fn lastrowid(&self) -> PyResult<i64> {
        Ok(self.conn()?.last_insert_rowid())
    }

    /// Rows changed by the last INSERT, UPDATE or DELETE.
    #[getter]
    fn rowcount(&self) -> PyResult<u64> {
        Ok(self.conn()?.changes())
    }

    /// True inside `read` (statements that write fail there).
    #[getter]
    fn read_only(&self) -> bool {
        self.read_only
    }
}

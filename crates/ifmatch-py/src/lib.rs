//! `ifmatch` for Python: the ifmatch library in-process, through PyO3.
//!
//! The Python API is a thin binding over the library's public API, one module
//! per primitive: [`store`] (open, get, head, put, delete, list), [`update`]
//! (the update loop), [`lease`] (leases and fenced writes), [`idempotency`],
//! [`snapshot`], [`tenantdb`] and [`accounts`]. No rule of the library is
//! written again here: each method converts its arguments, calls one library
//! function with the GIL released ([`runtime::block`]) and converts the
//! result or error back ([`errors`]). Callbacks into Python run with the GIL
//! held on the thread that runs the library's work ([`runtime::call_python`]).
//!
//! The package around this extension (`python/ifmatch`) adds the
//! `@ifmatch.idempotent` decorator, the exception classes, type stubs and the
//! `py.typed` marker. It is built with maturin and tested with pytest against
//! every backend by `scripts/python-tests` (the README's "Python" section).

use pyo3::prelude::*;

mod accounts;
mod clock;
mod convert;
mod errors;
mod idempotency;
mod lease;
mod options;
mod runtime;
mod snapshot;
mod store;
mod tenantdb;
mod update;

#[pymodule]
fn _ifmatch(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(store::open, m)?)?;
    // The Anki collection schema of seed 003, for `TenantDbs(schema=...)`.
    m.add("ANKI_SCHEMA", ifmatch::tenantdb::anki::SCHEMA_SQL)?;
    m.add_class::<store::Store>()?;
    m.add_class::<store::Object>()?;
    m.add_class::<store::ObjectMeta>()?;
    m.add_class::<store::ListEntry>()?;
    m.add_class::<store::ListPages>()?;
    m.add_class::<options::RetryPolicy>()?;
    m.add_class::<clock::ManualClock>()?;
    m.add_class::<lease::Lease>()?;
    m.add_class::<lease::FencedValue>()?;
    m.add_class::<idempotency::Idempotency>()?;
    m.add_class::<snapshot::Snapshots>()?;
    m.add_class::<snapshot::SnapshotReader>()?;
    m.add_class::<snapshot::Snapshot>()?;
    m.add_class::<snapshot::Served>()?;
    m.add_class::<snapshot::BuildContext>()?;
    m.add_class::<snapshot::PublishOutcome>()?;
    m.add_class::<tenantdb::TenantDbs>()?;
    m.add_class::<tenantdb::Tx>()?;
    m.add_class::<accounts::Accounts>()?;
    m.add_class::<accounts::User>()?;
    Ok(())
}

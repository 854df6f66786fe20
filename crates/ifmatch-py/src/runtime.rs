//! The one tokio runtime the module owns, and the two ways Python threads
//! meet it.
//!
//! - [`block`]: a Python thread runs a library future to completion with the
//!   GIL released, so other Python threads go on while it waits on the store.
//!   The future runs on the calling thread (spawned work on the runtime's
//!   workers).
//! - [`call_python`]: a library closure calls back into Python, with the GIL
//!   held, on the thread that runs it (the calling thread inside [`block`],
//!   or the blocking thread that runs tenant-database SQLite work). The
//!   callback may itself call ifmatch again (an idempotent handler writing to
//!   the store, a tenant transaction that commits elsewhere): it runs in a
//!   `block_in_place` section, outside the runtime's async context, so that
//!   nested [`block`] is allowed.

use std::future::Future;
use std::sync::OnceLock;

use pyo3::prelude::*;
use tokio::runtime::{Builder, Runtime};

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The module's runtime, started on first use.
pub fn runtime() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        // Without a runtime nothing in the module can work: failing to start
        // one (no threads left) is as fatal as failing to allocate.
        #[allow(clippy::expect_used)]
        Builder::new_multi_thread()
            .enable_all()
            .thread_name("ifmatch")
            .build()
            .expect("ifmatch: cannot start the tokio runtime")
    })
}

/// Runs `fut` to completion with the GIL released.
pub fn block<F>(py: Python<'_>, fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    py.detach(|| runtime().block_on(fut))
}

/// Calls into Python from library code: with the GIL held, on this thread.
pub fn call_python<R>(f: impl FnOnce(Python<'_>) -> R) -> R {
    let in_runtime = tokio::runtime::Handle::try_current().is_ok();
    if in_runtime {
        tokio::task::block_in_place(|| Python::attach(f))
    } else {
        Python::attach(f)
    }
}

//! `Store.update_json`: the library's update loop with a Python function.
//!
//! [`ifmatch::update::update_json`] reads, calls the function, writes with
//! `If-Match` and re-applies on a conflict; here the function is a Python
//! callable, called with the GIL held on the thread that runs the loop. An
//! exception it raises aborts the loop and is re-raised unchanged.

use ifmatch::error::BoxError;
use pyo3::prelude::*;
use serde_json::Value;

use crate::convert::{json_to_py, py_to_json};
use crate::errors::update_error;
use crate::options::Context;
use crate::runtime::{block, call_python};

/// Runs the update loop on `key` with `func` (current value or None → new value or None).
pub fn update_json(
    py: Python<'_>,
    ctx: &Context,
    key: &str,
    func: Py<PyAny>,
) -> PyResult<Py<PyAny>> {
    let store = ctx.store.clone();
    let policy = ctx.default_policy();
    let apply = |current: Option<Value>| -> Result<Option<Value>, BoxError> {
        call_python(|py| -> PyResult<Option<Value>> {
            let arg = match &current {
                Some(v) => json_to_py(py, v)?,
                None => py.None(),
            };
            let next = func.bind(py).call1((arg,))?;
            if next.is_none() {
                Ok(None)
            } else {
                py_to_json(&next, "the value returned by the update function").map(Some)
            }
        })
        .map_err(BoxError::from)
    };
    let updated = block(py, async move {
        ifmatch::update::update_json(&*store, key, &policy, apply).await
    })
    .map_err(|e| update_error(py, &e))?;
    match updated.value {
        Some(v) => json_to_py(py, &v),
        None => Ok(py.None()),
    }
}

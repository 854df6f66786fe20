//! Conversions between Python values and the library's: JSON values (through
//! Python's own `json` module, so what it accepts and its error messages are
//! the familiar ones), bodies, metadata, durations, times and SQLite values.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ifmatch::store::Metadata;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyModule, PyString};
use rusqlite::types::Value as SqlValue;
use serde_json::Value;

static JSON: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn json(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    Ok(JSON
        .get_or_try_init(py, || PyModule::import(py, "json").map(Bound::unbind))?
        .bind(py))
}

/// A Python value as JSON; `what` names it in the error when it is not JSON-serialisable.
pub fn py_to_json(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Value> {
    let py = value.py();
    let kwargs = PyDict::new(py);
    kwargs.set_item("allow_nan", false)?;
    let text: String = match json(py)?.call_method("dumps", (value,), Some(&kwargs)) {
        Ok(t) => t.extract()?,
        Err(e) => {
            return Err(PyTypeError::new_err(format!(
                "{what} must be JSON-serialisable: {}",
                e.value(py)
            )));
        }
    };
    serde_json::from_str(&text)
        .map_err(|e| PyTypeError::new_err(format!("{what} must be JSON-serialisable: {e}")))
}

/// A JSON value as a Python value (dicts, lists, str, int, float, bool, None).
pub fn json_to_py(py: Python<'_>, value: &Value) -> PyResult<Py<PyAny>> {
    let text = serde_json::to_string(value)
        .map_err(|e| PyValueError::new_err(format!("cannot encode JSON: {e}")))?;
    Ok(json(py)?.call_method1("loads", (text,))?.unbind())
}

/// `bytes` parsed as JSON (with Python's `json.loads`).
pub fn json_loads(py: Python<'_>, bytes: &Py<PyAny>) -> PyResult<Py<PyAny>> {
    Ok(json(py)?.call_method1("loads", (bytes.bind(py),))?.unbind())
}

/// Bytes given as `bytes`, `bytearray` or `str` (stored as UTF-8).
pub fn body(value: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(Bytes::from(s.to_str()?.as_bytes().to_vec()));
    }
    if let Ok(b) = value.cast::<PyBytes>() {
        return Ok(Bytes::from(b.as_bytes().to_vec()));
    }
    if let Ok(b) = value.cast::<PyByteArray>() {
        return Ok(Bytes::from(b.to_vec()));
    }
    Err(PyTypeError::new_err(format!(
        "expected bytes or str, got {}",
        value.get_type().name()?
    )))
}

/// `bytes` holding `b`.
pub fn bytes_to_py(py: Python<'_>, b: &[u8]) -> Py<PyAny> {
    PyBytes::new(py, b).into_any().unbind()
}

/// Metadata given as a dict of str to str.
pub fn metadata(value: Option<&Bound<'_, PyDict>>) -> PyResult<Metadata> {
    let mut out = Metadata::new();
    if let Some(d) = value {
        for (k, v) in d.iter() {
            out.insert(k.extract()?, v.extract()?);
        }
    }
    Ok(out)
}

/// A duration given in seconds (int or float, finite and not negative).
pub fn seconds(value: f64, what: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        PyValueError::new_err(format!(
            "{what} must be a finite, non-negative number of seconds, got {value}"
        ))
    })
}

/// Seconds since the Unix epoch, as a float.
pub fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A Python value as an SQLite value: None, bool, int, float, str or bytes.
pub fn sql_value(value: &Bound<'_, PyAny>) -> PyResult<SqlValue> {
    if value.is_none() {
        return Ok(SqlValue::Null);
    }
    if value.is_instance_of::<PyInt>() {
        // bool is an int subclass: True is 1, as in Python's sqlite3.
        return Ok(SqlValue::Integer(value.extract()?));
    }
    if value.is_instance_of::<PyFloat>() {
        return Ok(SqlValue::Real(value.extract()?));
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(SqlValue::Text(s.to_str()?.to_string()));
    }
    if let Ok(b) = value.cast::<PyBytes>() {
        return Ok(SqlValue::Blob(b.as_bytes().to_vec()));
    }
    Err(PyTypeError::new_err(format!(
        "SQL parameters must be None, int, float, str or bytes, got {}",
        value.get_type().name()?
    )))
}

/// An SQLite value as a Python value.
pub fn sql_to_py(py: Python<'_>, value: rusqlite::types::ValueRef<'_>) -> PyResult<Py<PyAny>> {
    use rusqlite::types::ValueRef;
    Ok(match value {
        ValueRef::Null => py.None(),
        ValueRef::Integer(i) => i.into_pyobject(py)?.into_any().unbind(),
        ValueRef::Real(f) => f.into_pyobject(py)?.into_any().unbind(),
        ValueRef::Text(t) => PyString::new(py, &String::from_utf8_lossy(t))
            .into_any()
            .unbind(),
        ValueRef::Blob(b) => bytes_to_py(py, b),
    })
}

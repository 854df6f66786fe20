//! `ifmatch.Accounts`: users with a conditional create and argon2id password
//! hashes (the library's [`ifmatch::accounts`]). Hashes never reach Python.

use std::time::SystemTime;

use ifmatch::accounts::{Accounts as LibAccounts, AccountsConfig, HashParams, User as LibUser};
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::convert::epoch_seconds;
use crate::errors::accounts_error;
use crate::runtime::block;
use crate::store::Store;

/// The users in a store.
#[pyclass(module = "ifmatch", frozen)]
pub struct Accounts {
    inner: LibAccounts,
}

#[pymethods]
impl Accounts {
    /// Users in `store`. `hash_params=(memory_kib, iterations, parallelism)`
    /// sets the argon2id cost of new hashes (default OWASP's; cheaper ones are for tests).
    #[new]
    #[pyo3(signature = (store, *, hash_params=None))]
    fn new(
        py: Python<'_>,
        store: PyRef<'_, Store>,
        hash_params: Option<(u32, u32, u32)>,
    ) -> PyResult<Self> {
        let ctx = &store.ctx;
        let mut config = AccountsConfig::default()
            .with_clock(ctx.clock.clone())
            .with_retry(ctx.default_policy());
        if let Some((m, t, p)) = hash_params {
            config = config.with_hash_params(HashParams::new(m, t, p));
        }
        let inner =
            LibAccounts::new(ctx.store.clone(), config).map_err(|e| accounts_error(py, &e))?;
        Ok(Accounts { inner })
    }

    /// Creates a user, only if the username is free (`UserExistsError` otherwise).
    fn create(&self, py: Python<'_>, username: &str, name: &str, password: &str) -> PyResult<User> {
        let inner = &self.inner;
        block(
            py,
            async move { inner.create(username, name, password).await },
        )
        .map(User::from)
        .map_err(|e| accounts_error(py, &e))
    }

    /// The user, or None if there is none by that name.
    fn get(&self, py: Python<'_>, username: &str) -> PyResult<Option<User>> {
        let inner = &self.inner;
        block(py, async move { inner.get(username).await })
            .map(|u| u.map(User::from))
            .map_err(|e| accounts_error(py, &e))
    }

    /// The user if the password is right; `InvalidCredentialsError` otherwise
    /// (the same for an unknown user).
    fn authenticate(&self, py: Python<'_>, username: &str, password: &str) -> PyResult<User> {
        let inner = &self.inner;
        block(
            py,
            async move { inner.authenticate(username, password).await },
        )
        .map(User::from)
        .map_err(|e| accounts_error(py, &e))
    }

    /// Changes a user's password; `UserNotFoundError` if there is no such user.
    fn set_password(&self, py: Python<'_>, username: &str, password: &str) -> PyResult<User> {
        let inner = &self.inner;
        block(
            py,
            async move { inner.set_password(username, password).await },
        )
        .map(User::from)
        .map_err(|e| accounts_error(py, &e))
    }

    /// Changes a user's display name.
    fn set_name(&self, py: Python<'_>, username: &str, name: &str) -> PyResult<User> {
        let inner = &self.inner;
        block(py, async move { inner.set_name(username, name).await })
            .map(User::from)
            .map_err(|e| accounts_error(py, &e))
    }

    /// Deletes a user: True if one was deleted, False if there was none.
    fn delete(&self, py: Python<'_>, username: &str) -> PyResult<bool> {
        let inner = &self.inner;
        block(py, async move { inner.delete(username).await }).map_err(|e| accounts_error(py, &e))
    }

    /// One page of at most `limit` users after `token`: `(users, next_token)`;
    /// `next_token` is None on the last page.
    #[pyo3(signature = (*, limit=100, token=None))]
    fn list(
        &self,
        py: Python<'_>,
        limit: usize,
        token: Option<String>,
    ) -> PyResult<(Py<PyList>, Option<String>)> {
        let inner = &self.inner;
        let page = block(py, async move { inner.list(token.as_deref(), limit).await })
            .map_err(|e| accounts_error(py, &e))?;
        let users: Vec<User> = page.users.into_iter().map(User::from).collect();
        Ok((PyList::new(py, users)?.unbind(), page.next))
    }
}

/// A user: everything but the password hash.
#[pyclass(module = "ifmatch", frozen, get_all)]
pub struct User {
    /// The username, folded to lowercase.
    username: String,
    /// The display name.
    name: String,
    /// When the user was created (seconds since the epoch).
    created_at: f64,
    /// When the name or password last changed (seconds since the epoch).
    updated_at: f64,
}

impl From<LibUser> for User {
    fn from(u: LibUser) -> Self {
        let t = |s: SystemTime| epoch_seconds(s);
        User {
            username: u.username,
            name: u.name,
            created_at: t(u.created_at),
            updated_at: t(u.updated_at),
        }
    }
}

#[pymethods]
impl User {
    fn __repr__(&self) -> String {
        format!(
            "ifmatch.User(username={:?}, name={:?})",
            self.username, self.name
        )
    }
}

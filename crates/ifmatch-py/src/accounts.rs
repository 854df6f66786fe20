//! `ifmatch.Accounts`: accounts with an immutable account id, a conditional
//! create, argon2id password hashes on a bounded pool of hashing threads and a
//! failed-login back-off (the library's [`ifmatch::accounts`]). Hashes never
//! reach Python.

use std::future::Future;
use std::net::IpAddr;
use std::time::SystemTime;

use ifmatch::accounts::{
    Accounts as LibAccounts, AccountsConfig, AccountsError, HashParams, ThrottleConfig,
    User as LibUser,
};
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::convert::epoch_seconds;
use crate::errors::{accounts_error, invalid_input};
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
    /// `hash_capacity=(workers, queue)` bounds the hashing threads and the
    /// requests waiting for one (beyond that: `BusyError`). `throttle=False`
    /// turns off the failed-login back-off of `login` (for trusted batch tools).
    #[new]
    #[pyo3(signature = (store, *, hash_params=None, hash_capacity=None, throttle=true))]
    fn new(
        py: Python<'_>,
        store: PyRef<'_, Store>,
        hash_params: Option<(u32, u32, u32)>,
        hash_capacity: Option<(usize, usize)>,
        throttle: bool,
    ) -> PyResult<Self> {
        let ctx = &store.ctx;
        let mut config = AccountsConfig::default()
            .with_clock(ctx.clock.clone())
            .with_retry(ctx.default_policy());
        if let Some((m, t, p)) = hash_params {
            config = config.with_hash_params(HashParams::new(m, t, p));
        }
        if let Some((workers, queue)) = hash_capacity {
            config = config.with_hash_capacity(workers, queue);
        }
        if !throttle {
            config = config.with_throttle(ThrottleConfig::off());
        }
        let inner =
            LibAccounts::new(ctx.store.clone(), config).map_err(|e| accounts_error(py, &e))?;
        Ok(Accounts { inner })
    }

    /// Creates a user, only if the username is free (`UserExistsError` otherwise).
    fn create(&self, py: Python<'_>, username: &str, name: &str, password: &str) -> PyResult<User> {
        let inner = &self.inner;
        user_result(
            py,
            async move { inner.create(username, name, password).await },
        )
    }

    /// The user, or None if there is none by that name.
    fn get(&self, py: Python<'_>, username: &str) -> PyResult<Option<User>> {
        let inner = &self.inner;
        block(py, async move { inner.get(username).await })
            .map(|u| u.map(User::from))
            .map_err(|e| accounts_error(py, &e))
    }

    /// `authenticate` behind the failed-login back-off: `ThrottledError`
    /// (before any hashing) while the username, or the `client` address
    /// (`"203.0.113.7"`, IPv4 or IPv6), has failed too often lately; a failure
    /// counts against both, a success clears the username's count.
    #[pyo3(signature = (username, password, *, client=None))]
    fn login(
        &self,
        py: Python<'_>,
        username: &str,
        password: &str,
        client: Option<&str>,
    ) -> PyResult<User> {
        let client = client_address(py, client)?;
        let inner = &self.inner;
        user_result(
            py,
            async move { inner.login(username, password, client).await },
        )
    }

    /// A user changing their own password: checks `old` (behind the same
    /// back-off as `login`), then writes `new` only if the account did not
    /// change in between (`ConflictError` otherwise). The revision goes up.
    #[pyo3(signature = (username, old, new, *, client=None))]
    fn change_password(
        &self,
        py: Python<'_>,
        username: &str,
        old: &str,
        new: &str,
        client: Option<&str>,
    ) -> PyResult<User> {
        let client = client_address(py, client)?;
        let inner = &self.inner;
        user_result(py, async move {
            inner.change_password(username, old, new, client).await
        })
    }

    /// The user if the password is right; `InvalidCredentialsError` otherwise
    /// (the same for an unknown user). Not throttled: see `login`.
    fn authenticate(&self, py: Python<'_>, username: &str, password: &str) -> PyResult<User> {
        let inner = &self.inner;
        user_result(
            py,
            async move { inner.authenticate(username, password).await },
        )
    }

    /// Sets a user's password (an administrator's reset: the old one is not
    /// checked); `UserNotFoundError` if there is no such user. The revision goes up.
    fn set_password(&self, py: Python<'_>, username: &str, password: &str) -> PyResult<User> {
        let inner = &self.inner;
        user_result(
            py,
            async move { inner.set_password(username, password).await },
        )
    }

    /// Changes a user's display name.
    fn set_name(&self, py: Python<'_>, username: &str, name: &str) -> PyResult<User> {
        let inner = &self.inner;
        user_result(py, async move { inner.set_name(username, name).await })
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

/// Runs an account operation that returns a user, with the GIL released.
fn user_result<F>(py: Python<'_>, op: F) -> PyResult<User>
where
    F: Future<Output = Result<LibUser, AccountsError>> + Send,
{
    block(py, op)
        .map(User::from)
        .map_err(|e| accounts_error(py, &e))
}

/// A client address given as text.
fn client_address(py: Python<'_>, client: Option<&str>) -> PyResult<Option<IpAddr>> {
    client
        .map(|c| {
            c.parse::<IpAddr>().map_err(|_| {
                invalid_input(py, format!("client {c:?} is not an IPv4 or IPv6 address"))
            })
        })
        .transpose()
}

/// A user: everything but the password hash.
#[pyclass(module = "ifmatch", frozen, get_all)]
pub struct User {
    /// The account id: immutable, never reused (a renamed or re-created
    /// username gets a new one). Key a user's own data by it.
    id: String,
    /// The username, folded to lowercase.
    username: String,
    /// The display name.
    name: String,
    /// The change counter: bind a session to it; a password change raises it.
    revision: u64,
    /// The key prefix of this account's own data: `users/<id>/`.
    data_prefix: String,
    /// When the user was created (seconds since the epoch).
    created_at: f64,
    /// When the name or password last changed (seconds since the epoch).
    updated_at: f64,
}

impl From<LibUser> for User {
    fn from(u: LibUser) -> Self {
        let t = |s: SystemTime| epoch_seconds(s);
        User {
            data_prefix: u.data_prefix(),
            id: u.id,
            revision: u.revision,
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
            "ifmatch.User(id={:?}, username={:?}, name={:?}, revision={})",
            self.id, self.username, self.name, self.revision
        )
    }
}

//! Stores that pass every call on to an inner store except the few they change.
//!
//! Tests (and tools such as a request counter) often need a store that
//! behaves like another one but for one detail: it counts requests, loses
//! one response, lets a rival write slip in before a put, or ignores
//! conditions. Implementing all of [`Store`] by hand for that repeats six
//! delegating methods each time. Implement [`Intercept`] instead: name the
//! inner store in [`Intercept::inner`] and override only what differs. Every
//! `T: Intercept` is a [`Store`] (a blanket implementation), so it goes
//! wherever a [`DynStore`](super::DynStore) does.
//!
//! Two kinds of override, which combine:
//!
//! - **one operation**: [`Intercept::get`], [`Intercept::put`], ... have the
//!   [`Store`] method's signature and by default call the inner store;
//! - **every operation**: [`Intercept::around`] runs around each call (a
//!   [`Call`] says which operation, on which key, with how many bytes): act
//!   before, `.await` the operation (which runs the one-operation override),
//!   act after, or return an error without reaching the inner store at all.
//!
//! A call goes: [`Store`] method → [`Intercept::around`] → the
//! [`Intercept`] method of the same name → (by default) the inner store.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use async_trait::async_trait;
//! use bytes::Bytes;
//! use ifmatch::store::intercept::{self, Call};
//! use ifmatch::store::memory::MemoryStore;
//! use ifmatch::{Condition, DynStore, PutOptions, Result, Store, Version};
//!
//! /// Counts requests, and turns every write into a create-if-absent.
//! #[derive(Debug, Default)]
//! struct CreateOnly {
//!     inner: MemoryStore,
//!     requests: AtomicU64,
//! }
//!
//! #[async_trait]
//! impl intercept::Intercept for CreateOnly {
//!     fn inner(&self) -> &dyn Store {
//!         &self.inner
//!     }
//!     async fn around<R: Send, F>(&self, _call: Call<'_>, run: F) -> Result<R>
//!     where
//!         F: std::future::Future<Output = Result<R>> + Send,
//!     {
//!         self.requests.fetch_add(1, Ordering::Relaxed);
//!         run.await
//!     }
//!     async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<Version> {
//!         let opts = PutOptions { condition: Condition::Absent, ..opts };
//!         self.inner.put(key, body, opts).await
//!     }
//! }
//!
//! let store = Arc::new(CreateOnly::default());
//! store.put("k", "1".into(), PutOptions::any()).await?;
//! assert!(store.put("k", "2".into(), PutOptions::any()).await.is_err());
//! assert_eq!(store.get("k").await?.body, "1");
//! assert_eq!(store.requests.load(Ordering::Relaxed), 3);
//! let _shared: DynStore = store; // goes wherever a store does
//! # Ok::<(), ifmatch::Error>(()) }).unwrap();
//! ```
//!
//! Such a type has each operation twice, once from each trait. Name the
//! trait by its path in the `impl` (`impl intercept::Intercept for ...`)
//! rather than importing it, so that calls like `store.get(key)` stay
//! unambiguous; where both traits are imported, write `Store::get(&store, key)`.

use std::fmt;
use std::future::Future;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    Condition, Fetch, ListPage, ListResult, Object, ObjectMeta, PutOptions, Store, Version,
};
use crate::error::Result;

/// Which [`Store`] operation a [`Call`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// [`Store::get`].
    Get,
    /// [`Store::get_if_changed`].
    GetIfChanged,
    /// [`Store::head`].
    Head,
    /// [`Store::put`].
    Put,
    /// [`Store::delete`].
    Delete,
    /// [`Store::list`].
    List,
}

impl Op {
    /// The method's name: `"get"`, `"get_if_changed"`, `"head"`, `"put"`, `"delete"` or `"list"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::GetIfChanged => "get_if_changed",
            Op::Head => "head",
            Op::Put => "put",
            Op::Delete => "delete",
            Op::List => "list",
        }
    }

    /// Whether the operation may change the store (`put`, `delete`).
    pub fn is_write(self) -> bool {
        matches!(self, Op::Put | Op::Delete)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One call as [`Intercept::around`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call<'a> {
    /// The operation.
    pub op: Op,
    /// The key (for [`Op::List`], the prefix).
    pub key: &'a str,
    /// The size of the value written, for [`Op::Put`]; 0 otherwise.
    pub bytes: u64,
}

/// A [`Store`] that passes calls on to [`Intercept::inner`] except those it
/// overrides; see the module docs.
///
/// Every method but [`Intercept::inner`] has a default that delegates.
#[async_trait]
pub trait Intercept: Send + Sync + fmt::Debug {
    /// The store calls are passed on to. It may differ from call to call
    /// (e.g. a working store or a failing one).
    fn inner(&self) -> &dyn Store;

    /// Runs around every operation: `call` says which one, `run` runs it
    /// (the override of the same name, or the inner store's). By default just
    /// `run.await`; return without awaiting `run` to fail the call without
    /// reaching the inner store.
    async fn around<R: Send, F>(&self, _call: Call<'_>, run: F) -> Result<R>
    where
        F: Future<Output = Result<R>> + Send,
    {
        run.await
    }

    /// As [`Store::describe`]; the inner store's by default.
    fn describe(&self) -> String {
        self.inner().describe()
    }

    /// As [`Store::max_value_size`]; the inner store's by default.
    fn max_value_size(&self) -> Option<u64> {
        self.inner().max_value_size()
    }

    /// As [`Store::get`].
    async fn get(&self, key: &str) -> Result<Object> {
        self.inner().get(key).await
    }

    /// As [`Store::get_if_changed`].
    async fn get_if_changed(&self, key: &str, known: &Version) -> Result<Fetch> {
        self.inner().get_if_changed(key, known).await
    }

    /// As [`Store::head`].
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.inner().head(key).await
    }

    /// As [`Store::put`].
    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<Version> {
        self.inner().put(key, body, opts).await
    }

    /// As [`Store::delete`].
    async fn delete(&self, key: &str, condition: Condition) -> Result<()> {
        self.inner().delete(key, condition).await
    }

    /// As [`Store::list`].
    async fn list(&self, prefix: &str, page: ListPage) -> Result<ListResult> {
        self.inner().list(prefix, page).await
    }
}

fn call(op: Op, key: &str) -> Call<'_> {
    Call { op, key, bytes: 0 }
}

#[async_trait]
impl<T: Intercept> Store for T {
    fn describe(&self) -> String {
        Intercept::describe(self)
    }

    fn max_value_size(&self) -> Option<u64> {
        Intercept::max_value_size(self)
    }

    async fn get(&self, key: &str) -> Result<Object> {
        self.around(call(Op::Get, key), Intercept::get(self, key))
            .await
    }

    async fn get_if_changed(&self, key: &str, known: &Version) -> Result<Fetch> {
        self.around(
            call(Op::GetIfChanged, key),
            Intercept::get_if_changed(self, key, known),
        )
        .await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.around(call(Op::Head, key), Intercept::head(self, key))
            .await
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<Version> {
        let c = Call {
            op: Op::Put,
            key,
            bytes: body.len() as u64,
        };
        self.around(c, Intercept::put(self, key, body, opts)).await
    }

    async fn delete(&self, key: &str, condition: Condition) -> Result<()> {
        self.around(
            call(Op::Delete, key),
            Intercept::delete(self, key, condition),
        )
        .await
    }

    async fn list(&self, prefix: &str, page: ListPage) -> Result<ListResult> {
        self.around(call(Op::List, prefix), Intercept::list(self, prefix, page))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::error::Error;
    use crate::store::memory::MemoryStore;
    use crate::store::{DynStore, list_all};

    /// Overrides nothing.
    #[derive(Debug, Default)]
    struct Plain(MemoryStore);

    impl Intercept for Plain {
        fn inner(&self) -> &dyn Store {
            &self.0
        }
    }

    #[tokio::test]
    async fn without_overrides_every_operation_reaches_the_inner_store() {
        let plain = std::sync::Arc::new(Plain::default());
        let store: DynStore = plain.clone();
        assert_eq!(store.describe(), "memory://");
        assert_eq!(store.max_value_size(), plain.0.max_value_size());
        let v1 = store
            .put("a/1", "one".into(), PutOptions::if_absent())
            .await
            .unwrap();
        assert_eq!(plain.0.get("a/1").await.unwrap().body, "one");
        assert_eq!(store.get("a/1").await.unwrap().meta.version, v1);
        assert_eq!(store.head("a/1").await.unwrap().size, 3);
        assert_eq!(
            store.get_if_changed("a/1", &v1).await.unwrap(),
            Fetch::Unchanged
        );
        let keys: Vec<_> = list_all(&*store, "a/")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, ["a/1"]);
        let stale = Version::new("not-it");
        let err = store
            .delete("a/1", Condition::Matches(stale))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err}");
        store.delete("a/1", Condition::Matches(v1)).await.unwrap();
        assert!(matches!(
            plain.0.get("a/1").await,
            Err(Error::NotFound { .. })
        ));
    }

    /// Records every call, refuses deletes before they reach the store, and
    /// stores every put's value reversed.
    #[derive(Debug, Default)]
    struct Recording {
        inner: MemoryStore,
        calls: Mutex<Vec<(Op, String, u64)>>,
    }

    #[async_trait]
    impl Intercept for Recording {
        fn inner(&self) -> &dyn Store {
            &self.inner
        }
        fn describe(&self) -> String {
            "recording".into()
        }
        async fn around<R: Send, F>(&self, c: Call<'_>, run: F) -> Result<R>
        where
            F: Future<Output = Result<R>> + Send,
        {
            self.calls
                .lock()
                .unwrap()
                .push((c.op, c.key.to_string(), c.bytes));
            if c.op == Op::Delete {
                return Err(Error::InvalidInput("no deletes here".into()));
            }
            run.await
        }
        async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<Version> {
            let reversed: Vec<u8> = body.iter().rev().copied().collect();
            self.inner.put(key, reversed.into(), opts).await
        }
    }

    #[tokio::test]
    async fn around_sees_every_call_and_overrides_replace_one_operation() {
        let rec = std::sync::Arc::new(Recording::default());
        let store: DynStore = rec.clone();
        assert_eq!(store.describe(), "recording");
        let v = store
            .put("k", "abc".into(), PutOptions::any())
            .await
            .unwrap();
        assert_eq!(store.get("k").await.unwrap().body, "cba");
        store.get_if_changed("k", &v).await.unwrap();
        store.head("k").await.unwrap();
        store.list("", ListPage::default()).await.unwrap();
        let err = store.delete("k", Condition::Any).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        assert_eq!(rec.inner.get("k").await.unwrap().body, "cba");
        let calls = rec.calls.lock().unwrap().clone();
        let expected = [
            (Op::Put, "k", 3),
            (Op::Get, "k", 0),
            (Op::GetIfChanged, "k", 0),
            (Op::Head, "k", 0),
            (Op::List, "", 0),
            (Op::Delete, "k", 0),
        ]
        .map(|(op, k, b)| (op, k.to_string(), b));
        assert_eq!(calls, expected);
        assert_eq!(
            calls.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
            ["put", "get", "get_if_changed", "head", "list", "delete"]
        );
        assert!(Op::Put.is_write() && Op::Delete.is_write() && !Op::Get.is_write());
    }
}

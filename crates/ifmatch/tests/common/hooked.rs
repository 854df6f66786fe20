//! A store that runs a test's hook just before each write reaches the store
//! it wraps, to put "another worker" (or a pause) at an exact point of a
//! race. Shared through `#[path = ".../common/hooked.rs"] mod hooked;` by the
//! accounts and gc test binaries and the server's HTTP tests.

#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use ifmatch::store::intercept::{self, Call, Op};
use ifmatch::store::{DynStore, Store};

/// Which write is about to reach the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// A put.
    Put,
    /// A delete.
    Delete,
}

/// What runs before a write: given the key and the kind of write.
pub type Hook = Arc<dyn Fn(&str, Write) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// `inner`, with `hook` run before every put and delete.
#[derive(Clone)]
pub struct Hooked {
    inner: DynStore,
    hook: Hook,
}

impl Hooked {
    /// Wraps `inner`.
    pub fn new(inner: DynStore, hook: Hook) -> Arc<Hooked> {
        Arc::new(Hooked { inner, hook })
    }
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooked")
            .field("inner", &self.inner)
            .finish()
    }
}

#[async_trait]
impl intercept::Intercept for Hooked {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
    async fn around<R: Send, F>(&self, call: Call<'_>, run: F) -> ifmatch::Result<R>
    where
        F: Future<Output = ifmatch::Result<R>> + Send,
    {
        match call.op {
            Op::Put => (self.hook)(call.key, Write::Put).await,
            Op::Delete => (self.hook)(call.key, Write::Delete).await,
            _ => {}
        }
        run.await
    }
}

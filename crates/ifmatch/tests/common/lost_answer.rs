//! A store that loses the answer of one write and then fails every call
//! under a prefix, so that the writer cannot read back what happened: the
//! case a repeat with the same request id (or HTTP `Idempotency-Key`)
//! settles. Shared through `#[path = ".../common/lost_answer.rs"] mod
//! lost_answer;` by the snapshot tests and the server's HTTP tests.
//!
//! The first put of a key under `scope` that ends with `suffix` goes through
//! a [`FaultStore`] with `lost_response_rate` 1.0: it lands, and its caller
//! sees `Ambiguous`. From then on every call on a key under `scope` fails
//! with `Unavailable` (without reaching the store) until
//! [`LostAnswer::restore`]; other keys are untouched.

#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use ifmatch::clock::SharedRng;
use ifmatch::store::fault::{FaultConfig, FaultStore};
use ifmatch::store::intercept::{self, Call};
use ifmatch::store::{DynStore, PutOptions, Store, Version};

const ARMED: u8 = 0;
const DOWN: u8 = 1;
const UP: u8 = 2;

/// See the module docs.
#[derive(Debug)]
pub struct LostAnswer {
    inner: DynStore,
    lossy: FaultStore,
    scope: String,
    suffix: String,
    state: AtomicU8,
}

impl LostAnswer {
    /// `inner`, losing the answer of the first put under `scope` ending with `suffix`.
    pub fn new(inner: DynStore, scope: &str, suffix: &str) -> Self {
        let config = FaultConfig {
            lost_response_rate: 1.0,
            ..FaultConfig::default()
        };
        LostAnswer {
            lossy: FaultStore::new(inner.clone(), config, SharedRng::seeded(1)),
            inner,
            scope: scope.to_string(),
            suffix: suffix.to_string(),
            state: AtomicU8::new(ARMED),
        }
    }

    /// How many answers were lost.
    pub fn lost(&self) -> u64 {
        self.lossy.counters().lost_responses.load(Ordering::SeqCst)
    }

    /// Ends the outage; no answer is lost any more (until [`LostAnswer::arm`]).
    pub fn restore(&self) {
        self.state.store(UP, Ordering::SeqCst);
    }

    /// Loses the answer of the next matching put again.
    pub fn arm(&self) {
        self.state.store(ARMED, Ordering::SeqCst);
    }
}

#[async_trait]
impl intercept::Intercept for LostAnswer {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }

    async fn around<R: Send, F>(&self, call: Call<'_>, run: F) -> ifmatch::Result<R>
    where
        F: Future<Output = ifmatch::Result<R>> + Send,
    {
        if self.state.load(Ordering::SeqCst) == DOWN && call.key.starts_with(&self.scope) {
            return Err(ifmatch::Error::Unavailable {
                message: format!("{}: injected outage after a lost answer", call.key),
                source: None,
            });
        }
        run.await
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> ifmatch::Result<Version> {
        let target = key.starts_with(&self.scope) && key.ends_with(&self.suffix);
        if target
            && self
                .state
                .compare_exchange(ARMED, DOWN, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            return self.lossy.put(key, body, opts).await;
        }
        self.inner.put(key, body, opts).await
    }
}

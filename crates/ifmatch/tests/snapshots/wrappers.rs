//! Store wrappers for the tests: one that counts requests, one that can be switched off.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use ifmatch::clock::SharedRng;
use ifmatch::store::fault::{FaultConfig, FaultStore};
use ifmatch::store::intercept::{self, Call};
use ifmatch::store::{DynStore, Object, Store};

/// Which part of a snapshot a key is.
fn part(key: &str) -> &'static str {
    if key.ends_with("/head") {
        "head"
    } else if key.contains("/v/") {
        "body"
    } else if key.ends_with("/building") {
        "building"
    } else {
        "other"
    }
}

/// Counts requests by operation and snapshot part ("head", "body", "building").
#[derive(Debug)]
pub struct Counting {
    inner: DynStore,
    counts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl Counting {
    pub fn new(inner: DynStore) -> Self {
        Counting {
            inner,
            counts: Mutex::default(),
        }
    }
    fn add(&self, op: &'static str, key: &str) {
        *self
            .counts
            .lock()
            .unwrap()
            .entry((op, part(key)))
            .or_default() += 1;
    }
    /// Requests of `op` ("get", "get_if_changed", "head", "put", "delete", "list") on `part`.
    pub fn count(&self, op: &str, part: &str) -> u64 {
        self.counts
            .lock()
            .unwrap()
            .iter()
            .filter(|((o, p), _)| *o == op && *p == part)
            .map(|(_, n)| *n)
            .sum()
    }
}

#[async_trait]
impl intercept::Intercept for Counting {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
    fn describe(&self) -> String {
        format!("counting({})", self.inner.describe())
    }
    async fn around<R: Send, F>(&self, call: Call<'_>, run: F) -> ifmatch::Result<R>
    where
        F: std::future::Future<Output = ifmatch::Result<R>> + Send,
    {
        self.add(call.op.as_str(), call.key);
        run.await
    }
}

/// A store that can be taken down: while down, every call goes through a
/// [`FaultStore`] with `error_rate` 1.0 (and fails with `Unavailable`).
#[derive(Debug)]
pub struct Outage {
    up: DynStore,
    down: FaultStore,
    is_down: AtomicBool,
}

impl Outage {
    pub fn new(inner: DynStore) -> Self {
        let config = FaultConfig {
            error_rate: 1.0,
            ..FaultConfig::default()
        };
        Outage {
            down: FaultStore::new(inner.clone(), config, SharedRng::seeded(1)),
            up: inner,
            is_down: AtomicBool::new(false),
        }
    }
    pub fn set_down(&self, down: bool) {
        self.is_down.store(down, Ordering::SeqCst);
    }
    /// Calls that reached the store while it was down (all failed).
    pub fn failed_calls(&self) -> u64 {
        self.down.counters().errors.load(Ordering::SeqCst)
    }
    fn pick(&self) -> &dyn Store {
        if self.is_down.load(Ordering::SeqCst) {
            &self.down
        } else {
            self.up.as_ref()
        }
    }
}

impl intercept::Intercept for Outage {
    fn inner(&self) -> &dyn Store {
        self.pick()
    }
    fn describe(&self) -> String {
        format!("outage({})", self.up.describe())
    }
}

/// Runs a one-shot action just before the first body download goes through,
/// to interleave another worker's publish with a reader's fetch.
pub struct BeforeFirstBodyGet {
    inner: DynStore,
    action: tokio::sync::Mutex<Option<futures::future::BoxFuture<'static, ()>>>,
}

impl std::fmt::Debug for BeforeFirstBodyGet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeFirstBodyGet")
    }
}

impl BeforeFirstBodyGet {
    pub fn new(inner: DynStore, action: futures::future::BoxFuture<'static, ()>) -> Self {
        BeforeFirstBodyGet {
            inner,
            action: tokio::sync::Mutex::new(Some(action)),
        }
    }
}

#[async_trait]
impl intercept::Intercept for BeforeFirstBodyGet {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
    async fn get(&self, key: &str) -> ifmatch::Result<Object> {
        if part(key) == "body" {
            let action = self.action.lock().await.take();
            if let Some(action) = action {
                action.await;
            }
        }
        self.inner.get(key).await
    }
}

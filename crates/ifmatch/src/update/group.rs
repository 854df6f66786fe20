//! Group commit: concurrent updates of one key in one process, combined into one conditional write.
//!
//! An [`Updater`] owns a store handle, a retry policy and an in-process map
//! of key → queue. The first update of an idle key starts a writer task for
//! it; while that writer's conditional write is in flight, later updates of
//! the key (from any task holding this `Updater` or a clone of it) queue.
//! When the write settles the writer takes the whole queue (at most
//! [`MAX_BATCH`] changes) as the next batch: it starts from the object the
//! previous batch landed (or reads the key once, for a first batch or after
//! a failure), applies
//! the closures in arrival order — each sees the value the previous one
//! left — and lands them with **one** conditional write. The key leaves the
//! map when its queue is empty. Nothing is shared across processes or
//! across `Updater`s: two `Updater`s on one store are two writers that
//! race through compare-and-swap like any others.
//!
//! What each caller is told:
//!
//! - its own result: the version the combined write created, or its own
//!   closure's error — a closure that fails fails only its own caller, and
//!   the batch goes on from the value before it;
//! - a conflict (another process moved the key) re-reads and re-applies the
//!   whole batch, within the policy's budget, as the update loop does for one
//!   change; when the budget ends every change of the batch gets the same
//!   error (a combined write is all or nothing);
//! - a caller whose future was dropped before its change was applied is
//!   left out of the next application (its change is not made).
//!
//! Exactly-once is the update loop's (see [`super`]): every change keeps its
//! own write id, a combined write carries all of them in `ifmatch-wid` (in
//! order) and counts them in `ifmatch-seq`, and a lost or late answer is
//! judged from the run of those ids in the key's history. A batch never
//! grows past what the metadata budget can hold beside [`super::MIN_HISTORY`]
//! earlier ids: changes that would not fit (many changes, long
//! caller-chosen ids, large user metadata) wait for the next write, so a
//! write's own ids are never trimmed and the write it followed stays
//! findable. A caller-chosen id ([`Updater::update_with_id`]) found in the
//! history when its batch reads the key is a replay: its closure does not
//! run and it is answered with [`Updated::replayed`].
//!
//! Closures after the first in a batch see an intermediate value that is
//! never stored on its own: its version (`ifmatch-batch:<write id>`) matches
//! no stored version, so a closure that checks a version it read earlier
//! (an HTTP `If-Match`) sees that the key moved. A closure that panics
//! stops the key's writer: the callers waiting on it get an error.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::oneshot;

use crate::error::{BoxError, Error};
use crate::retry::RetryPolicy;
use crate::store::{DynStore, Object, ObjectMeta, Store, Version};

use super::lineage::Lineage;
use super::{
    Decision, JsonSlot, UpdateError, Updated, UpdatedJson, check_write_id, json_result, json_step,
    update_inner, write_id,
};

/// The most changes one combined write carries (fewer when their ids and
/// the user metadata would not fit the metadata budget).
pub const MAX_BATCH: usize = 64;

type Step = Box<dyn FnMut(Option<&Object>) -> Result<Decision, BoxError> + Send>;
type Outcome = Result<(Updated, Option<Object>), UpdateError>;

/// One queued change.
struct Pending {
    wid: String,
    replayable: bool,
    step: Step,
    tx: oneshot::Sender<Outcome>,
}

type Queues = Arc<Mutex<HashMap<String, VecDeque<Pending>>>>;

/// Runs updates through the update loop, combining concurrent updates of one
/// key into one conditional write (see the module docs).
#[derive(Clone)]
pub struct Updater {
    store: DynStore,
    policy: RetryPolicy,
    queues: Queues,
}

impl std::fmt::Debug for Updater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updater")
            .field("store", &self.store.describe())
            .finish_non_exhaustive()
    }
}

impl Updater {
    /// An updater on `store`; every batch runs within `policy`.
    pub fn new(store: DynStore, policy: RetryPolicy) -> Self {
        Updater {
            store,
            policy,
            queues: Arc::default(),
        }
    }

    /// The store it writes to.
    pub fn store(&self) -> &DynStore {
        &self.store
    }

    /// [`super::update`], combined with concurrent updates of `key`.
    pub async fn update<F>(&self, key: &str, f: F) -> Result<Updated, UpdateError>
    where
        F: FnMut(Option<&Object>) -> Result<Decision, BoxError> + Send + 'static,
    {
        let wid = write_id(&self.policy.rng);
        self.submit(key, wid, false, Box::new(f))
            .await
            .map(|(u, _)| u)
    }

    /// [`super::update_with_id`], combined with concurrent updates of `key`.
    pub async fn update_with_id<F>(
        &self,
        key: &str,
        write_id: &str,
        f: F,
    ) -> Result<Updated, UpdateError>
    where
        F: FnMut(Option<&Object>) -> Result<Decision, BoxError> + Send + 'static,
    {
        check_write_id(write_id)?;
        self.submit(key, write_id.to_string(), true, Box::new(f))
            .await
            .map(|(u, _)| u)
    }

    /// [`super::update_json`], combined with concurrent updates of `key`.
    pub async fn update_json<T, F>(&self, key: &str, f: F) -> Result<UpdatedJson<T>, UpdateError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnMut(Option<T>) -> Result<Option<T>, BoxError> + Send + 'static,
    {
        let wid = write_id(&self.policy.rng);
        self.json(key, wid, false, f).await
    }

    /// [`super::update_json_with_id`], combined with concurrent updates of `key`.
    pub async fn update_json_with_id<T, F>(
        &self,
        key: &str,
        write_id: &str,
        f: F,
    ) -> Result<UpdatedJson<T>, UpdateError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnMut(Option<T>) -> Result<Option<T>, BoxError> + Send + 'static,
    {
        check_write_id(write_id)?;
        self.json(key, write_id.to_string(), true, f).await
    }

    async fn json<T, F>(
        &self,
        key: &str,
        wid: String,
        replayable: bool,
        f: F,
    ) -> Result<UpdatedJson<T>, UpdateError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnMut(Option<T>) -> Result<Option<T>, BoxError> + Send + 'static,
    {
        let last = JsonSlot::default();
        let step = json_step(key, f, last.clone());
        let r = self.submit(key, wid, replayable, Box::new(step)).await;
        json_result(key, r, &last)
    }

    /// Queues one change and waits for its answer, starting the key's writer if it is idle.
    async fn submit(&self, key: &str, wid: String, replayable: bool, step: Step) -> Outcome {
        let (tx, rx) = oneshot::channel();
        let pending = Pending {
            wid,
            replayable,
            step,
            tx,
        };
        let idle = {
            let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
            match queues.get_mut(key) {
                Some(queue) => {
                    queue.push_back(pending);
                    false
                }
                None => {
                    queues.insert(key.to_string(), VecDeque::from([pending]));
                    true
                }
            }
        };
        if idle {
            tokio::spawn(self.clone().writer(key.to_string()));
        }
        rx.await.map_err(|_| {
            UpdateError::Store(Error::Other {
                message: format!(
                    "the writer of key '{key}' stopped before answering (an update closure panicked)"
                ),
                source: None,
            })
        })?
    }

    /// The key's writer: lands batches until the key's queue is empty.
    async fn writer(self, key: String) {
        let mut guard = Forget {
            queues: self.queues.clone(),
            key: key.clone(),
            armed: true,
        };
        // The key as the last batch left it: the next batch starts from it
        // instead of reading the key again (a conflict re-reads).
        let mut last: Option<Object> = None;
        loop {
            let batch: Vec<Pending> = {
                let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
                let Some(queue) = queues.get_mut(&key) else {
                    guard.armed = false;
                    return;
                };
                let mut batch = Vec::new();
                while batch.len() < MAX_BATCH {
                    let Some(p) = queue.pop_front() else { break };
                    if !p.tx.is_closed() {
                        batch.push(p);
                    }
                }
                if batch.is_empty() {
                    queues.remove(&key);
                    guard.armed = false;
                    return;
                }
                batch
            };
            let (deferred, after) =
                run_batch(&*self.store, &key, &self.policy, batch, last.take()).await;
            last = after;
            if !deferred.is_empty() {
                let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
                let queue = queues.entry(key.clone()).or_default();
                for p in deferred.into_iter().rev() {
                    queue.push_front(p);
                }
            }
        }
    }
}

/// Drops a key's queue if its writer stops without emptying it (a panic):
/// the waiting callers are answered with an error instead of waiting forever.
struct Forget {
    queues: Queues,
    key: String,
    armed: bool,
}

impl Drop for Forget {
    fn drop(&mut self) {
        if self.armed {
            let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
            queues.remove(&self.key);
        }
    }
}

/// A change's part in the latest application of its batch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// It changed the value.
    Wrote,
    /// It left the value as it was.
    Kept,
    /// It did not fit in this write; it waits for the next one.
    Deferred,
}

/// Lands one batch through the update loop, starting from `start` when
/// given (the key as the previous batch left it); returns the changes left
/// for the next write and the key as this batch left it, when known.
async fn run_batch(
    store: &dyn Store,
    key: &str,
    policy: &RetryPolicy,
    batch: Vec<Pending>,
    start: Option<Object>,
) -> (Vec<Pending>, Option<Object>) {
    let mut members: Vec<Option<Pending>> = batch.into_iter().map(Some).collect();
    let mut roles = vec![Role::Kept; members.len()];
    let r = update_inner(store, key, policy, None, start, |cur| {
        Ok(apply(key, cur, &mut members, &mut roles))
    })
    .await;
    let mut deferred = Vec::new();
    for (slot, role) in members.iter_mut().zip(&roles) {
        let Some(p) = slot.take() else { continue };
        if *role == Role::Deferred {
            deferred.push(p);
            continue;
        }
        // The object goes to the writer only: a change answered here is no
        // replay (replays are answered in `apply`), so its caller never reads it.
        let outcome = match &r {
            Ok((u, _)) => {
                let mut u = u.clone();
                u.changed &= *role == Role::Wrote;
                Ok((u, None))
            }
            Err(e) => Err(copy(e)),
        };
        let _ = p.tx.send(outcome);
    }
    let after = r.ok().and_then(|(_, after)| after);
    (deferred, after)
}

/// Applies the batch's closures in order to `cur`; answers the changes that
/// end here (replays, aborts); returns the combined decision and its ids.
fn apply(
    key: &str,
    cur: Option<&Object>,
    members: &mut [Option<Pending>],
    roles: &mut [Role],
) -> (Decision, Vec<String>) {
    let base = Lineage::of(cur);
    let mut state: Option<Object> = cur.cloned();
    let mut wids: Vec<String> = Vec::new();
    let mut changed = false;
    let mut full = false;
    for (slot, role) in members.iter_mut().zip(roles.iter_mut()) {
        let Some(m) = slot else { continue };
        if m.tx.is_closed() {
            // The caller is gone and its change never landed: leave it out.
            *slot = None;
            continue;
        }
        if m.replayable && base.contains(&m.wid) {
            let u = Updated {
                version: cur.map(|o| o.meta.version.clone()),
                changed: true,
                attempts: 0,
                conflicts: 0,
                ambiguous_resolved: 0,
                replayed: true,
            };
            answer(slot, Ok((u, cur.cloned())));
            continue;
        }
        if full {
            *role = Role::Deferred;
            continue;
        }
        match (m.step)(state.as_ref()) {
            Err(source) => answer(
                slot,
                Err(UpdateError::Aborted {
                    key: key.to_string(),
                    source,
                }),
            ),
            Ok(Decision::Keep) => *role = Role::Kept,
            Ok(Decision::Delete) if state.is_none() => *role = Role::Kept,
            Ok(Decision::Delete) => {
                state = None;
                wids.push(m.wid.clone());
                changed = true;
                *role = Role::Wrote;
            }
            Ok(Decision::Write { body, metadata }) => {
                let mut ids = wids.clone();
                ids.push(m.wid.clone());
                if !base.fits(&metadata, &ids) {
                    if wids.is_empty() {
                        // Too large even alone: the loop's own error, for this caller only.
                        let mut md = metadata;
                        let e = base.next(key, &ids, &mut md).err().unwrap_or_else(|| {
                            Error::InvalidInput(format!("the metadata of key '{key}' is too large"))
                        });
                        answer(slot, Err(UpdateError::Store(e)));
                    } else {
                        *role = Role::Deferred;
                        full = true;
                    }
                    continue;
                }
                let version = Version::new(format!("ifmatch-batch:{}", m.wid));
                state = Some(Object {
                    meta: ObjectMeta {
                        key: key.to_string(),
                        version,
                        size: body.len() as u64,
                        metadata,
                        expires_at: None,
                    },
                    body,
                });
                wids = ids;
                changed = true;
                *role = Role::Wrote;
            }
        }
    }
    let decision = match (changed, state) {
        (false, _) => Decision::Keep,
        (true, Some(o)) => Decision::Write {
            body: o.body,
            metadata: o.meta.metadata,
        },
        (true, None) if cur.is_some() => Decision::Delete,
        (true, None) => Decision::Keep,
    };
    (decision, wids)
}

/// Sends a change its answer and removes it from the batch.
fn answer(slot: &mut Option<Pending>, outcome: Outcome) {
    if let Some(p) = slot.take() {
        let _ = p.tx.send(outcome);
    }
}

/// The batch's failure, for each of its changes (errors are not `Clone`).
fn copy(e: &UpdateError) -> UpdateError {
    match e {
        UpdateError::Conflict {
            key,
            attempts,
            conflicts,
            last,
        } => UpdateError::Conflict {
            key: key.clone(),
            attempts: *attempts,
            conflicts: *conflicts,
            last: copy_store(last),
        },
        UpdateError::Ambiguous { key } => UpdateError::Ambiguous { key: key.clone() },
        UpdateError::Aborted { key, source } => UpdateError::Aborted {
            key: key.clone(),
            source: source.to_string().into(),
        },
        UpdateError::Store(e) => UpdateError::Store(copy_store(e)),
    }
}

fn copy_store(e: &Error) -> Error {
    let source = |s: &Option<BoxError>| s.as_ref().map(|s| BoxError::from(s.to_string()));
    match e {
        Error::Conflict {
            key,
            expected,
            actual,
        } => Error::Conflict {
            key: key.clone(),
            expected: expected.clone(),
            actual: actual.clone(),
        },
        Error::NotFound { key } => Error::NotFound { key: key.clone() },
        Error::InvalidKey { key, reason } => Error::InvalidKey {
            key: key.clone(),
            reason: reason.clone(),
        },
        Error::InvalidInput(m) => Error::InvalidInput(m.clone()),
        Error::TooLarge { key, size, limit } => Error::TooLarge {
            key: key.clone(),
            size: *size,
            limit: *limit,
        },
        Error::Unavailable { message, source: s } => Error::Unavailable {
            message: message.clone(),
            source: source(s),
        },
        Error::Ambiguous { key, message } => Error::Ambiguous {
            key: key.clone(),
            message: message.clone(),
        },
        Error::Unsupported(m) => Error::Unsupported(m.clone()),
        Error::Other { message, source: s } => Error::Other {
            message: message.clone(),
            source: source(s),
        },
    }
}

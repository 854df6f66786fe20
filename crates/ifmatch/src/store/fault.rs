//! A fault-injecting wrapper over any store, driven by a seeded RNG.
//!
//! [`FaultStore`] sits in front of a real backend and, with configured
//! probabilities, makes calls fail the ways networks, SDKs and services fail
//! (the fault model of `DESIGN.md`, "Faults we design for"):
//!
//! - **errors**: the call fails with [`Error::Unavailable`] before reaching the store;
//! - **lost answers**: a write or delete *lands* in the inner store, but the
//!   caller sees [`Error::Ambiguous`] (the response was lost on the way back);
//! - **late delivery**: the caller sees [`Error::Ambiguous`] at once (it gave
//!   up: a timeout, a reset connection) while the request is still on its
//!   way; it lands later — a delay drawn from [`FaultConfig::late_delay`],
//!   so before or after the caller's next request — or, with probability
//!   [`FaultConfig::late_never`], never;
//! - **duplicated delivery**: the request is delivered twice (an HTTP-level
//!   retry of a write that landed) and the caller gets the *second* answer,
//!   e.g. a `Conflict` for its own write;
//! - **late duplicates**: the request lands and is answered, and a copy of it
//!   arrives again later (an SDK or proxy re-send). Harmless for conditional
//!   writes; an unconditional one overwrites whatever was written meanwhile;
//! - **S3's 409 ConditionalRequestConflict**: a conditional write (`Absent` or
//!   `Matches`) is refused without being applied, as S3 does when conditional
//!   writes to one key race. It reaches the caller the way the S3 backend
//!   reports it: [`Error::Unavailable`] (retryable; nothing was written);
//! - **bursts (brownouts)**: after a lost or late answer, with probability
//!   [`FaultConfig::burst_rate`], the next N calls of any kind (N drawn from
//!   [`FaultConfig::burst_len`]) fail with [`Error::Unavailable`], so a
//!   read-back fails too;
//! - **latency and reordering**: every call waits a delay drawn from
//!   [`FaultConfig::latency`] before it reaches the store, and answers after
//!   a delay drawn from [`FaultConfig::answer_latency`]; writes in flight
//!   together therefore land in any order.
//!
//! Delays are slept on the injected clock ([`FaultStore::with_clock`]); late
//! deliveries run as tokio tasks, so a `FaultStore` with late or duplicated
//! delivery must be used inside a tokio runtime. [`FaultStore::settle`]
//! waits until every delivery still on its way has landed (or was dropped).
//!
//! **Deterministic**: every decision is drawn from the store's own
//! [`SharedRng`], so the same seed and the same sequence of calls give the
//! same faults. Give each simulated client its own `FaultStore` (with its own
//! seed) over one shared inner store: then each client's faults depend only on
//! its own calls, and a run on tokio's paused clock replays exactly. Counters
//! report what was injected, and [`FaultStore::trace`] (when enabled with
//! [`FaultStore::with_trace`]) lists every injected fault in order.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    Condition, DynStore, Fetch, ListPage, ListResult, Object, ObjectMeta, PutOptions, Store,
    Version,
};
use crate::clock::{DynClock, SharedRng, SystemClock};
use crate::error::{Error, Result};

/// What to inject, and how often. All rates are probabilities per call in `[0, 1]`.
///
/// The write fates (`lost_response_rate`, `late_rate`, `duplicate_rate`,
/// `late_duplicate_rate`, and `conflict_409_rate` for conditional writes) are
/// drawn together for each write or delete that passed the error check: their
/// sum should not exceed 1; the rest of the probability is a normal call.
#[derive(Clone, Debug)]
pub struct FaultConfig {
    /// A call fails with `Unavailable` without reaching the store.
    pub error_rate: f64,
    /// A write or delete lands but reports `Ambiguous`.
    pub lost_response_rate: f64,
    /// A write or delete reports `Ambiguous` at once and lands later (or never).
    pub late_rate: f64,
    /// Of the late deliveries, the share that never lands.
    pub late_never: f64,
    /// How long after its caller got `Ambiguous` a late delivery lands (uniform).
    pub late_delay: (Duration, Duration),
    /// A write or delete is delivered twice; the caller gets the second answer.
    pub duplicate_rate: f64,
    /// A write or delete lands and is answered; a copy arrives again later
    /// (after a delay drawn from `late_delay`).
    pub late_duplicate_rate: f64,
    /// A conditional write or delete is refused like S3's 409
    /// ConditionalRequestConflict (nothing written; `Unavailable`).
    pub conflict_409_rate: f64,
    /// After a lost or late answer, the chance that a brownout follows.
    pub burst_rate: f64,
    /// How many calls of any kind a brownout fails (uniform, inclusive).
    pub burst_len: (u32, u32),
    /// Delay before a call reaches the store (uniform); `(0, 0)` for none.
    pub latency: (Duration, Duration),
    /// Delay between a call reaching the store and its answer (uniform).
    pub answer_latency: (Duration, Duration),
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            error_rate: 0.0,
            lost_response_rate: 0.0,
            late_rate: 0.0,
            late_never: 0.0,
            late_delay: (Duration::ZERO, Duration::ZERO),
            duplicate_rate: 0.0,
            late_duplicate_rate: 0.0,
            conflict_409_rate: 0.0,
            burst_rate: 0.0,
            burst_len: (0, 0),
            latency: (Duration::ZERO, Duration::ZERO),
            answer_latency: (Duration::ZERO, Duration::ZERO),
        }
    }
}

/// Counts of what a [`FaultStore`] injected.
#[derive(Debug, Default)]
pub struct FaultCounters {
    /// Calls failed before reaching the store (including brownouts and 409s).
    pub errors: AtomicU64,
    /// Writes and deletes that landed but reported `Ambiguous`.
    pub lost_responses: AtomicU64,
    /// Writes and deletes reported `Ambiguous` while still on their way.
    pub late: AtomicU64,
    /// Late deliveries that landed (were applied to the inner store).
    pub late_landed: AtomicU64,
    /// Writes and deletes delivered twice.
    pub duplicated: AtomicU64,
    /// Conditional writes refused like S3's 409.
    pub conflicts_409: AtomicU64,
    /// Brownouts started.
    pub bursts: AtomicU64,
    /// Calls passed through.
    pub calls: AtomicU64,
}

/// One write or delete, as it travels to the store (so it can land again later).
#[derive(Clone, Debug)]
enum Request {
    Put(String, Bytes, PutOptions),
    Delete(String, Condition),
}

impl Request {
    fn key(&self) -> &str {
        match self {
            Request::Put(k, ..) | Request::Delete(k, _) => k,
        }
    }
    fn conditional(&self) -> bool {
        match self {
            Request::Put(_, _, o) => o.condition != Condition::Any,
            Request::Delete(_, c) => *c != Condition::Any,
        }
    }
    fn describe(&self) -> String {
        match self {
            Request::Put(k, b, o) => format!("put '{k}' ({} B, if {})", b.len(), o.condition),
            Request::Delete(k, c) => format!("delete '{k}' (if {c})"),
        }
    }
}

/// A write's answer: the new version of a put, `None` for a delete.
type Answer = Result<Option<Version>>;

/// What happens to one write or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Normal,
    Lost,
    Late,
    Duplicate,
    LateDuplicate,
    Conflict409,
}

#[derive(Debug, Default)]
struct InFlight {
    /// Deliveries still on their way.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// A store wrapper that injects faults; see the module docs.
#[derive(Debug, Clone)]
pub struct FaultStore {
    inner: DynStore,
    config: FaultConfig,
    rng: SharedRng,
    clock: DynClock,
    counters: Arc<FaultCounters>,
    burst_left: Arc<AtomicU32>,
    in_flight: Arc<InFlight>,
    trace: Option<Arc<Mutex<Vec<String>>>>,
    /// The clock's reading when the store was made: traces count from it.
    epoch_ms: u64,
}

impl FaultStore {
    /// Wraps `inner`, drawing faults from `rng`.
    pub fn new(inner: DynStore, config: FaultConfig, rng: SharedRng) -> Self {
        let clock = SystemClock::shared();
        FaultStore {
            inner,
            config,
            rng,
            epoch_ms: clock.now_ms(),
            clock,
            counters: Arc::default(),
            burst_left: Arc::default(),
            in_flight: Arc::default(),
            trace: None,
        }
    }

    /// Sleeps latency and late deliveries on this clock instead of the real one.
    pub fn with_clock(mut self, clock: DynClock) -> Self {
        self.epoch_ms = clock.now_ms();
        self.clock = clock;
        self
    }

    /// Records every injected fault (see [`FaultStore::trace`]).
    pub fn with_trace(mut self) -> Self {
        self.trace = Some(Arc::default());
        self
    }

    /// What has been injected so far.
    pub fn counters(&self) -> &FaultCounters {
        &self.counters
    }

    /// The wrapped store.
    pub fn inner(&self) -> &DynStore {
        &self.inner
    }

    /// The faults injected so far, one line each, in order, each with the
    /// milliseconds since the store was made (empty unless
    /// [`FaultStore::with_trace`] was called).
    pub fn trace(&self) -> Vec<String> {
        match &self.trace {
            Some(t) => t.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            None => Vec::new(),
        }
    }

    /// Waits until every late delivery and late duplicate has landed or been
    /// dropped. Call it before checking the inner store's final state.
    pub async fn settle(&self) {
        loop {
            let tasks: Vec<_> = {
                let mut t = self
                    .in_flight
                    .tasks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                std::mem::take(&mut *t)
            };
            if tasks.is_empty() {
                return;
            }
            for t in tasks {
                // A delivery task only applies one request; its panics are the inner store's.
                let _ = t.await;
            }
        }
    }

    fn note(&self, line: impl FnOnce() -> String) {
        if let Some(t) = &self.trace {
            let ms = self.clock.now_ms().saturating_sub(self.epoch_ms);
            t.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{ms} ms: {}", line()));
        }
    }

    fn draw(&self, range: (Duration, Duration)) -> Duration {
        let (lo, hi) = range;
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo).as_nanos().min(u64::MAX as u128) as u64;
        lo + Duration::from_nanos(self.rng.up_to(span))
    }

    fn chance(&self, p: f64) -> bool {
        p > 0.0 && self.rng.unit() < p
    }

    /// Latency, brownouts and errors before a call reaches the store.
    async fn before(&self, op: &str, key: &str) -> Result<()> {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let d = self.draw(self.config.latency);
        if !d.is_zero() {
            self.clock.sleep(d).await;
        }
        let in_burst = self
            .burst_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if in_burst || self.chance(self.config.error_rate) {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            let why = if in_burst { "brownout" } else { "error" };
            self.note(|| format!("{op} '{key}': injected {why}"));
            return Err(Error::Unavailable {
                message: format!("injected fault ({why}): {op} '{key}' failed"),
                source: None,
            });
        }
        Ok(())
    }

    async fn after(&self) {
        let d = self.draw(self.config.answer_latency);
        if !d.is_zero() {
            self.clock.sleep(d).await;
        }
    }

    fn fate(&self, req: &Request) -> Fate {
        let c = &self.config;
        let total = c.lost_response_rate
            + c.late_rate
            + c.duplicate_rate
            + c.late_duplicate_rate
            + c.conflict_409_rate;
        if total <= 0.0 {
            // No draw: a configuration without write faults keeps the
            // generator's sequence for the faults it does have.
            return Fate::Normal;
        }
        let x = self.rng.unit();
        let mut edge = 0.0;
        let mut hit = |p: f64| {
            edge += p;
            p > 0.0 && x < edge
        };
        if hit(c.lost_response_rate) {
            Fate::Lost
        } else if hit(c.late_rate) {
            Fate::Late
        } else if hit(c.duplicate_rate) {
            Fate::Duplicate
        } else if hit(c.late_duplicate_rate) {
            Fate::LateDuplicate
        } else if req.conditional() && hit(c.conflict_409_rate) {
            Fate::Conflict409
        } else {
            Fate::Normal
        }
    }

    fn maybe_burst(&self) {
        if self.chance(self.config.burst_rate) {
            let (lo, hi) = self.config.burst_len;
            let n = lo + self.rng.up_to(hi.saturating_sub(lo) as u64) as u32;
            if n > 0 {
                self.counters.bursts.fetch_add(1, Ordering::Relaxed);
                self.burst_left.store(n, Ordering::SeqCst);
                self.note(|| format!("brownout of {n} calls starts"));
            }
        }
    }

    async fn apply(inner: &DynStore, req: &Request) -> Answer {
        match req {
            Request::Put(k, b, o) => inner.put(k, b.clone(), o.clone()).await.map(Some),
            Request::Delete(k, c) => inner.delete(k, c.clone()).await.map(|()| None),
        }
    }

    fn describe_answer(a: &Answer) -> String {
        match a {
            Ok(Some(v)) => format!("landed ({v})"),
            Ok(None) => "deleted".into(),
            Err(e) => format!("refused ({:?})", e.kind()),
        }
    }

    /// Applies `req` later (after a delay drawn from `late_delay`), as a task.
    fn deliver_later(&self, req: Request, what: &'static str) {
        let delay = self.draw(self.config.late_delay);
        let (inner, clock, counters) = (
            self.inner.clone(),
            self.clock.clone(),
            self.counters.clone(),
        );
        let (trace, epoch_ms) = (self.trace.clone(), self.epoch_ms);
        self.note(|| format!("{}: {what}, lands in {delay:?}", req.describe()));
        let task = tokio::spawn(async move {
            clock.sleep(delay).await;
            let outcome = Self::apply(&inner, &req).await;
            if outcome.is_ok() {
                counters.late_landed.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(t) = trace {
                let ms = clock.now_ms().saturating_sub(epoch_ms);
                t.lock().unwrap_or_else(|e| e.into_inner()).push(format!(
                    "{ms} ms: {}: {what} arrived: {}",
                    req.describe(),
                    Self::describe_answer(&outcome)
                ));
            }
        });
        self.in_flight
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    /// Sends one write or delete through the fault model.
    async fn send(&self, op: &str, req: Request) -> Answer {
        let key = req.key().to_string();
        self.before(op, &key).await?;
        let ambiguous = |what: &str| Error::Ambiguous {
            key: key.clone(),
            message: format!("injected fault: the answer to a {op} was {what}"),
        };
        let fate = self.fate(&req);
        let answer = match fate {
            Fate::Normal => Self::apply(&self.inner, &req).await,
            Fate::Conflict409 => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                self.counters.conflicts_409.fetch_add(1, Ordering::Relaxed);
                self.note(|| format!("{}: 409 ConditionalRequestConflict", req.describe()));
                Err(Error::Unavailable {
                    message: format!(
                        "injected fault: S3 answered 409 ConditionalRequestConflict to a {op} of '{key}' (nothing was written)"
                    ),
                    source: None,
                })
            }
            Fate::Lost => {
                self.counters.lost_responses.fetch_add(1, Ordering::Relaxed);
                let landed = Self::apply(&self.inner, &req).await;
                self.note(|| {
                    format!(
                        "{}: answer lost (it {})",
                        req.describe(),
                        Self::describe_answer(&landed)
                    )
                });
                self.maybe_burst();
                Err(ambiguous("lost"))
            }
            Fate::Late => {
                self.counters.late.fetch_add(1, Ordering::Relaxed);
                if self.chance(self.config.late_never) {
                    self.note(|| format!("{}: given up, never lands", req.describe()));
                } else {
                    self.deliver_later(req.clone(), "late delivery");
                }
                self.maybe_burst();
                Err(ambiguous("not received (the request may still land)"))
            }
            Fate::Duplicate => {
                self.counters.duplicated.fetch_add(1, Ordering::Relaxed);
                let first = Self::apply(&self.inner, &req).await;
                let second = Self::apply(&self.inner, &req).await;
                self.note(|| {
                    format!(
                        "{}: delivered twice: {} then {} (the caller sees the second)",
                        req.describe(),
                        Self::describe_answer(&first),
                        Self::describe_answer(&second)
                    )
                });
                second
            }
            Fate::LateDuplicate => {
                self.counters.duplicated.fetch_add(1, Ordering::Relaxed);
                let first = Self::apply(&self.inner, &req).await;
                self.deliver_later(req.clone(), "late duplicate");
                first
            }
        };
        self.after().await;
        answer
    }
}

#[async_trait]
impl Store for FaultStore {
    fn describe(&self) -> String {
        format!("fault({})", self.inner.describe())
    }

    fn max_value_size(&self) -> Option<u64> {
        self.inner.max_value_size()
    }

    async fn get(&self, key: &str) -> Result<Object> {
        self.before("get", key).await?;
        let r = self.inner.get(key).await;
        self.after().await;
        r
    }

    async fn get_if_changed(&self, key: &str, known: &Version) -> Result<Fetch> {
        self.before("get", key).await?;
        let r = self.inner.get_if_changed(key, known).await;
        self.after().await;
        r
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.before("head", key).await?;
        let r = self.inner.head(key).await;
        self.after().await;
        r
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<Version> {
        self.send("put", Request::Put(key.to_string(), body, opts))
            .await?
            .ok_or_else(|| {
                Error::msg(format!(
                    "the inner store answered a put of '{key}' without a version"
                ))
            })
    }

    async fn delete(&self, key: &str, condition: Condition) -> Result<()> {
        self.send("delete", Request::Delete(key.to_string(), condition))
            .await
            .map(drop)
    }

    async fn list(&self, prefix: &str, page: ListPage) -> Result<ListResult> {
        self.before("list", prefix).await?;
        let r = self.inner.list(prefix, page).await;
        self.after().await;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn store(config: FaultConfig, seed: u64) -> (FaultStore, DynStore) {
        let inner: DynStore = Arc::new(MemoryStore::new());
        let f = FaultStore::new(inner.clone(), config, SharedRng::seeded(seed)).with_trace();
        (f, inner)
    }

    fn storm() -> FaultConfig {
        FaultConfig {
            error_rate: 0.1,
            lost_response_rate: 0.1,
            late_rate: 0.1,
            late_never: 0.3,
            late_delay: (Duration::ZERO, Duration::from_millis(30)),
            duplicate_rate: 0.1,
            late_duplicate_rate: 0.1,
            conflict_409_rate: 0.1,
            burst_rate: 0.5,
            burst_len: (1, 3),
            latency: (Duration::ZERO, Duration::from_millis(5)),
            answer_latency: (Duration::ZERO, Duration::from_millis(5)),
        }
    }

    async fn workload(f: &FaultStore) -> Vec<String> {
        let mut answers = Vec::new();
        for i in 0..60u32 {
            let key = format!("k{}", i % 3);
            let r = match i % 4 {
                0 => f
                    .put(&key, "v".into(), PutOptions::if_absent())
                    .await
                    .map(|v| v.to_string()),
                1 => f
                    .put(&key, format!("{i}").into(), PutOptions::any())
                    .await
                    .map(|v| v.to_string()),
                2 => f.get(&key).await.map(|o| o.meta.version.to_string()),
                _ => f
                    .delete(&key, Condition::Any)
                    .await
                    .map(|()| "deleted".into()),
            };
            answers.push(format!("{:?}", r.map_err(|e| e.kind())));
        }
        f.settle().await;
        answers
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_seed_replays_the_same_faults() {
        // Each store is made just before its run: traces count from then.
        let (a, _) = store(storm(), 11);
        let ra = workload(&a).await;
        let (b, _) = store(storm(), 11);
        let rb = workload(&b).await;
        let (c, _) = store(storm(), 12);
        let rc = workload(&c).await;
        assert_eq!(ra, rb);
        assert_eq!(a.trace(), b.trace());
        assert!(!a.trace().is_empty());
        assert_ne!(
            (ra, a.trace()),
            (rc, c.trace()),
            "another seed, other faults"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_write_lands_after_its_caller_gave_up() {
        let (f, inner) = store(
            FaultConfig {
                late_rate: 1.0,
                late_delay: (Duration::from_millis(10), Duration::from_millis(10)),
                ..FaultConfig::default()
            },
            1,
        );
        let e = f.put("k", "v".into(), PutOptions::any()).await.unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Ambiguous);
        assert!(inner.get("k").await.is_err(), "not yet");
        f.settle().await;
        assert_eq!(inner.get("k").await.unwrap().body, "v");
        assert_eq!(f.counters().late_landed.load(Ordering::Relaxed), 1);
        // ... or never.
        let (f, inner) = store(
            FaultConfig {
                late_rate: 1.0,
                late_never: 1.0,
                ..FaultConfig::default()
            },
            1,
        );
        assert!(f.put("k", "v".into(), PutOptions::any()).await.is_err());
        f.settle().await;
        assert!(inner.get("k").await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_duplicated_write_answers_with_its_second_delivery() {
        let (f, inner) = store(
            FaultConfig {
                duplicate_rate: 1.0,
                ..FaultConfig::default()
            },
            1,
        );
        // The create lands; its copy finds the key there: a conflict with our own write.
        let e = f
            .put("k", "v".into(), PutOptions::if_absent())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Conflict);
        assert_eq!(inner.get("k").await.unwrap().body, "v");
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_duplicate_of_a_blind_write_overwrites_a_newer_value() {
        let (f, inner) = store(
            FaultConfig {
                late_duplicate_rate: 1.0,
                late_delay: (Duration::from_millis(5), Duration::from_millis(5)),
                ..FaultConfig::default()
            },
            1,
        );
        f.put("k", "old".into(), PutOptions::any()).await.unwrap();
        inner
            .put("k", "new".into(), PutOptions::any())
            .await
            .unwrap();
        f.settle().await;
        assert_eq!(
            inner.get("k").await.unwrap().body,
            "old",
            "the copy landed last"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn s3_409_refuses_only_conditional_writes_and_writes_nothing() {
        let (f, inner) = store(
            FaultConfig {
                conflict_409_rate: 1.0,
                ..FaultConfig::default()
            },
            1,
        );
        let e = f
            .put("k", "v".into(), PutOptions::if_absent())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unavailable);
        assert!(e.to_string().contains("409"), "{e}");
        assert!(inner.get("k").await.is_err());
        f.put("k", "v".into(), PutOptions::any()).await.unwrap();
        assert_eq!(f.counters().conflicts_409.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_brownout_follows_a_lost_answer() {
        let (f, inner) = store(
            FaultConfig {
                lost_response_rate: 1.0,
                burst_rate: 1.0,
                burst_len: (2, 2),
                ..FaultConfig::default()
            },
            1,
        );
        assert_eq!(
            f.put("k", "v".into(), PutOptions::any())
                .await
                .unwrap_err()
                .kind(),
            crate::ErrorKind::Ambiguous
        );
        for _ in 0..2 {
            assert_eq!(
                f.get("k").await.unwrap_err().kind(),
                crate::ErrorKind::Unavailable
            );
        }
        assert_eq!(f.get("k").await.unwrap().body, "v");
        assert_eq!(inner.get("k").await.unwrap().body, "v");
    }
}

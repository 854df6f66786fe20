//! Fault schedules against a model: proptest generates a sequence of store
//! operations and a fault seed; the sequence runs against a [`FaultStore`]
//! (errors, lost responses) over `memory://` and `file://`, and every answer
//! is compared with a simple in-memory reference model of the store.
//!
//! The model keeps, per key, the *set* of states the store may be in: a lost
//! response (`Ambiguous`) on a write whose condition held forks the state
//! (landed / not landed), and the next answer that tells them apart (a read,
//! a conditional write, the update loop's result) keeps only the branches it
//! agrees with. An answer no branch agrees with fails the test. At the end
//! every key is read through the inner store and must match a branch.
//!
//! Versions are opaque: the model learns them from the store's answers and
//! checks they never repeat for a key (no ABA). A write whose response was
//! lost has a version the model has not seen, which no condition naming an
//! older version can match.
//!
//! Cases: `PROPTEST_CASES` (default 48 per backend); seed: `RELIABILITY_SEED`.

use std::collections::HashSet;
use std::sync::Arc;

use ifmatch::Error;
use ifmatch::clock::SharedRng;
use ifmatch::store::fault::{FaultConfig, FaultStore};
use ifmatch::store::file::FileStore;
use ifmatch::store::intercept;
use ifmatch::store::memory::MemoryStore;
use ifmatch::store::{Condition, DynStore, PutOptions, Store, Version};
use ifmatch::update::{UpdateError, update_json};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

use crate::common::{TempDir, env_u64, fast_policy, seed};

const KEYS: [&str; 3] = ["a", "b", "dir/c"];

/// Which condition a put or delete names.
#[derive(Clone, Copy, Debug)]
enum Cond {
    Any,
    Absent,
    /// The version the model last learned for the key (if known).
    Current,
    /// A version the key had before, or a made-up one.
    Stale,
}

#[derive(Clone, Debug)]
enum Op {
    Get(usize),
    Put(usize, Cond, u32),
    Delete(usize, Cond),
    Incr(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    let cond = prop_oneof![
        1 => Just(Cond::Any),
        1 => Just(Cond::Absent),
        3 => Just(Cond::Current),
        1 => Just(Cond::Stale),
    ]
    .boxed();
    prop_oneof![
        3 => key.clone().prop_map(Op::Get),
        3 => (key.clone(), cond.clone(), any::<u32>()).prop_map(|(k, c, v)| Op::Put(k, c, v)),
        1 => (key.clone(), cond).prop_map(|(k, c)| Op::Delete(k, c)),
        3 => key.prop_map(Op::Incr),
    ]
}

/// One possible state of a key. Values are JSON numbers (so the update loop can increment them).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum State {
    Absent,
    /// `version` is `None` when the write's response was lost: a version never seen before.
    Present {
        value: u64,
        version: Option<Version>,
    },
}

impl State {
    fn version(&self) -> Option<&Version> {
        match self {
            State::Present { version, .. } => version.as_ref(),
            State::Absent => None,
        }
    }
    /// Whether a write conditioned on `c` lands on this state.
    fn admits(&self, c: &Condition) -> bool {
        match (c, self) {
            (Condition::Any, _) => true,
            (Condition::Absent, s) => *s == State::Absent,
            (Condition::Matches(_), State::Absent) => false,
            // An unknown version is a fresh one: no version we could name matches it.
            (Condition::Matches(v), s) => s.version() == Some(v),
        }
    }
}

#[derive(Debug)]
struct KeyModel {
    branches: Vec<State>,
    /// Every version the store ever reported for this key.
    seen: HashSet<Version>,
    /// The newest version the model knows (for `Cond::Current`).
    last_known: Option<Version>,
}

impl KeyModel {
    fn new() -> Self {
        KeyModel {
            branches: vec![State::Absent],
            seen: HashSet::new(),
            last_known: None,
        }
    }

    fn learn(&mut self, v: &Version, fresh: bool) -> Result<(), String> {
        if fresh && self.seen.contains(v) {
            return Err(format!("version {v} was reused (ABA)"));
        }
        self.seen.insert(v.clone());
        self.last_known = Some(v.clone());
        Ok(())
    }

    /// Keeps the branches `keep` accepts; an empty result is a mismatch.
    fn narrow(&mut self, what: &str, keep: impl Fn(&State) -> bool) -> Result<(), String> {
        let before = self.branches.clone();
        self.branches.retain(|s| keep(s));
        if self.branches.is_empty() {
            return Err(format!(
                "{what}: no model state agrees (states were {before:?})"
            ));
        }
        Ok(())
    }

    fn dedup(&mut self) {
        let mut seen = HashSet::new();
        self.branches.retain(|s| seen.insert(s.clone()));
    }

    /// A read answered `got`: keep matching branches, and learn an unknown version.
    fn observe(&mut self, what: &str, got: &State) -> Result<(), String> {
        if let State::Present {
            version: Some(v), ..
        } = got
        {
            let fresh = !self.seen.contains(v);
            // A version we never saw can only belong to a lost write's branch.
            let matches = |s: &State| match (s, got) {
                (State::Absent, State::Absent) => true,
                (
                    State::Present {
                        value: a,
                        version: va,
                    },
                    State::Present {
                        value: b,
                        version: Some(vb),
                    },
                ) => a == b && (va.as_ref() == Some(vb) || (va.is_none() && fresh)),
                _ => false,
            };
            self.narrow(what, matches)?;
            self.learn(v, false)?;
            self.branches = vec![got.clone()];
            return Ok(());
        }
        self.narrow(what, |s| s == got)
    }
}

struct Run {
    store: DynStore,
    inner: DynStore,
    keys: Vec<KeyModel>,
    policy: ifmatch::retry::RetryPolicy,
    log: Vec<String>,
}

fn body(n: u64) -> bytes::Bytes {
    n.to_string().into()
}

fn parse(b: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("unparsable value {b:?}"))
}

impl Run {
    fn condition(&self, k: usize, c: Cond) -> Condition {
        match c {
            Cond::Any => Condition::Any,
            Cond::Absent => Condition::Absent,
            Cond::Current => match &self.keys[k].last_known {
                Some(v) => Condition::Matches(v.clone()),
                None => Condition::Absent,
            },
            Cond::Stale => {
                let m = &self.keys[k];
                let old = m.seen.iter().find(|v| Some(*v) != m.last_known.as_ref());
                Condition::Matches(old.cloned().unwrap_or_else(|| Version::new("made-up")))
            }
        }
    }

    async fn step(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Get(k) => {
                let got = match self.store.get(KEYS[k]).await {
                    Ok(o) => State::Present {
                        value: parse(&o.body)?,
                        version: Some(o.meta.version),
                    },
                    Err(Error::NotFound { .. }) => State::Absent,
                    Err(Error::Unavailable { .. }) => return Ok(()),
                    Err(e) => return Err(format!("get: {e}")),
                };
                self.log.push(format!("get {} -> {got:?}", KEYS[k]));
                self.keys[k].observe("get", &got)
            }
            Op::Put(k, c, v) => {
                let cond = self.condition(k, c);
                let value = v as u64;
                let opts = PutOptions {
                    condition: cond.clone(),
                    ..PutOptions::default()
                };
                let r = self.store.put(KEYS[k], body(value), opts).await;
                self.log
                    .push(format!("put {} {value} if {cond:?} -> {r:?}", KEYS[k]));
                let m = &mut self.keys[k];
                match r {
                    Ok(version) => {
                        m.narrow("put landed", |s| s.admits(&cond))?;
                        m.learn(&version, true)?;
                        m.branches = vec![State::Present {
                            value,
                            version: Some(version),
                        }];
                    }
                    Err(Error::Conflict { .. }) => m.narrow("put refused", |s| !s.admits(&cond))?,
                    Err(Error::Unavailable { .. }) => {}
                    Err(Error::Ambiguous { .. }) => {
                        let mut next = Vec::new();
                        for s in &m.branches {
                            next.push(s.clone());
                            if s.admits(&cond) {
                                next.push(State::Present {
                                    value,
                                    version: None,
                                });
                            }
                        }
                        m.branches = next;
                        m.dedup();
                    }
                    Err(e) => return Err(format!("put: {e}")),
                }
                Ok(())
            }
            Op::Delete(k, c) => {
                let cond = self.condition(k, c);
                let r = self.store.delete(KEYS[k], cond.clone()).await;
                self.log
                    .push(format!("delete {} if {cond:?} -> {r:?}", KEYS[k]));
                let m = &mut self.keys[k];
                // Delete's rules: Any always succeeds; Absent only on an absent key.
                match r {
                    Ok(()) => {
                        m.narrow("delete landed", |s| s.admits(&cond))?;
                        m.branches = vec![State::Absent];
                    }
                    Err(Error::Conflict { .. }) => {
                        m.narrow("delete refused", |s| !s.admits(&cond))?
                    }
                    Err(Error::Unavailable { .. }) => {}
                    Err(Error::Ambiguous { .. }) => {
                        if m.branches.iter().any(|s| s.admits(&cond)) {
                            m.branches.push(State::Absent);
                            m.dedup();
                        }
                    }
                    Err(e) => return Err(format!("delete: {e}")),
                }
                Ok(())
            }
            Op::Incr(k) => {
                let r = update_json(&*self.store, KEYS[k], &self.policy, |n: Option<u64>| {
                    Ok(Some(n.unwrap_or(0) + 1))
                })
                .await;
                self.log.push(format!(
                    "incr {} -> {:?}",
                    KEYS[k],
                    r.as_ref().map(|u| (u.value, u.updated.version.clone()))
                ));
                let m = &mut self.keys[k];
                let incremented = |s: &State| match s {
                    State::Absent => 1,
                    State::Present { value, .. } => value + 1,
                };
                match r {
                    Ok(u) => {
                        let value = u.value.ok_or("incr wrote nothing")?;
                        m.narrow("incr result", |s| incremented(s) == value)?;
                        let version = u.updated.version.ok_or("incr without a version")?;
                        // The loop may have resolved a lost response by reading
                        // back its own write: the version is new to the model
                        // either way, but must never be an old one.
                        m.learn(&version, true)?;
                        m.branches = vec![State::Present {
                            value,
                            version: Some(version),
                        }];
                    }
                    // Nothing landed: every attempt lost a race (impossible alone) or failed first.
                    Err(UpdateError::Conflict { .. }) => {
                        return Err("incr conflicted with no other writer".into());
                    }
                    // Outcome unknown: either the increment landed once, or not at all.
                    Err(UpdateError::Ambiguous { .. }) | Err(UpdateError::Store(_)) => {
                        let mut next = Vec::new();
                        for s in &m.branches {
                            next.push(s.clone());
                            next.push(State::Present {
                                value: incremented(s),
                                version: None,
                            });
                        }
                        m.branches = next;
                        m.dedup();
                    }
                    Err(e) => return Err(format!("incr: {e}")),
                }
                Ok(())
            }
        }
    }

    /// Reads every key through the inner store (no faults) and resolves the model.
    async fn finish(&mut self) -> Result<(), String> {
        for (k, key) in KEYS.iter().enumerate() {
            let got = match self.inner.get(key).await {
                Ok(o) => State::Present {
                    value: parse(&o.body)?,
                    version: Some(o.meta.version),
                },
                Err(Error::NotFound { .. }) => State::Absent,
                Err(e) => return Err(format!("final get: {e}")),
            };
            self.keys[k].observe(&format!("final state of {key}"), &got)?;
        }
        Ok(())
    }
}

async fn run_case(inner: DynStore, fault_seed: u64, lost: f64, ops: &[Op]) -> Result<(), String> {
    let faulty = FaultStore::new(
        inner.clone(),
        FaultConfig {
            error_rate: 0.1,
            lost_response_rate: lost,
            ..FaultConfig::default()
        },
        SharedRng::seeded(fault_seed),
    );
    let mut run = Run {
        store: Arc::new(faulty),
        inner,
        keys: KEYS.iter().map(|_| KeyModel::new()).collect(),
        policy: fast_policy(fault_seed, 8),
        log: Vec::new(),
    };
    for op in ops {
        if let Err(e) = run.step(op).await {
            return Err(format!("{e}\nsteps so far:\n  {}", run.log.join("\n  ")));
        }
    }
    run.finish()
        .await
        .map_err(|e| format!("{e}\nsteps:\n  {}", run.log.join("\n  ")))
}

fn run_backend(
    test: &str,
    cases: u32,
    make: impl Fn() -> (DynStore, Option<TempDir>),
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let strategy = (
        any::<u64>(),
        prop_oneof![Just(0.0), Just(0.1), Just(0.3)],
        proptest::collection::vec(op(), 1..60),
    );
    let mut runner = TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed(test)),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(fault_seed, lost, ops)| {
            let (inner, _dir) = make();
            rt.block_on(run_case(inner, fault_seed, lost, &ops))
                .map_err(TestCaseError::fail)
        })
        .map_err(|e| e.to_string())
}

fn check_backend(test: &str, make: impl Fn() -> (DynStore, Option<TempDir>)) {
    let cases = env_u64("PROPTEST_CASES", 48) as u32;
    if let Err(e) = run_backend(test, cases, make) {
        panic!("{test}: {e}");
    }
}

#[test]
fn memory_store_matches_the_model_under_faults() {
    check_backend("model_memory", || (Arc::new(MemoryStore::new()), None));
}

#[test]
fn file_store_matches_the_model_under_faults() {
    check_backend("model_file", || {
        let dir = TempDir::new("model");
        (Arc::new(FileStore::open(&dir.0).unwrap()), Some(dir))
    });
}

/// A store that acknowledges every fifth write without keeping it: the
/// model must notice, or it proves nothing.
#[derive(Debug, Default)]
struct ForgetsWrites {
    inner: MemoryStore,
    puts: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl intercept::Intercept for ForgetsWrites {
    fn inner(&self) -> &dyn Store {
        &self.inner
    }
    fn describe(&self) -> String {
        "forgets-writes".into()
    }
    async fn put(
        &self,
        key: &str,
        body: bytes::Bytes,
        opts: PutOptions,
    ) -> ifmatch::Result<Version> {
        let n = self.puts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % 5 == 4 {
            return Ok(Version::new(format!("forgotten-{n}")));
        }
        self.inner.put(key, body, opts).await
    }
}

#[test]
fn the_model_catches_a_store_that_forgets_acknowledged_writes() {
    let r = run_backend("model_forgetful", 48, || {
        (Arc::new(ForgetsWrites::default()), None)
    });
    let e = r.expect_err("a store that drops acknowledged writes passed the model");
    println!("caught, as it should be:\n{e}");
}

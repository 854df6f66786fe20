//! Concurrent races whose whole history (not only the final value) is checked
//! for linearizability: clients mix reads, unconditional writes, creates,
//! compare-and-swaps (on the version they read) and deletes on one key, and
//! record each operation's invoke and complete instants and result.
//!
//! Runs on `memory://` and `file://`, with and without faults: errors, S3's
//! 409, brownouts, lost answers and late deliveries (a lost answer or a late
//! delivery is an operation of unknown outcome, completing at infinity: it
//! may take effect at any point after its invocation, even after its caller
//! moved on).
//! `RELIABILITY_HISTORY_ROUNDS` repeats each race with new seeds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ifmatch::clock::SharedRng;
use ifmatch::store::fault::{FaultConfig, FaultStore};
use ifmatch::store::file::FileStore;
use ifmatch::store::intercept;
use ifmatch::store::memory::MemoryStore;
use ifmatch::store::{Condition, DynStore, PutOptions, Store, Version};
use ifmatch::{Error, Object};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::{TempDir, env_u64, seed};
use crate::linearizability::{Call, Op, Ret, Value, assert_linearizable};

const KEY: &str = "register";

fn parse(o: &Object) -> u64 {
    std::str::from_utf8(&o.body)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unparsable register value {:?}", o.body))
}

/// What one client knows of the register: the last value and version it read.
type Seen = Option<(u64, Version)>;

/// Runs `clients` × `ops` random operations against `store`, returning the history.
async fn race(store: DynStore, clients: usize, ops: usize, seed: u64) -> Vec<Op> {
    let start = Instant::now();
    let history = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let store = store.clone();
        let history = history.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ (c as u64).wrapping_mul(0x9e37_79b9));
            let mut seen: Seen = None;
            let mut next = 0u64;
            let now = |start: Instant| start.elapsed().as_nanos() as u64;
            for _ in 0..ops {
                next += 1;
                // Unique per client and op, so a value names the write that made it.
                let value = (c as u64 + 1) * 1_000_000 + next;
                let pick = rng.random_range(0..100u32);
                let invoke = now(start);
                let (call, result): (Call, Result<Ret, Error>) = match pick {
                    0..=34 => {
                        let r = store.get(KEY).await;
                        let r = match r {
                            Ok(o) => {
                                seen = Some((parse(&o), o.meta.version.clone()));
                                Ok(Ret::Read(Some(parse(&o))))
                            }
                            Err(Error::NotFound { .. }) => {
                                seen = None;
                                Ok(Ret::Read(None))
                            }
                            Err(e) => Err(e),
                        };
                        (Call::Read, r)
                    }
                    35..=44 => {
                        let r = store
                            .put(KEY, value.to_string().into(), PutOptions::any())
                            .await;
                        (Call::Write(value), r.map(|_| Ret::Done(true)))
                    }
                    45..=89 => match &seen {
                        // Conditioned on what this client last read.
                        Some((expected, version)) => {
                            let r = store
                                .put(
                                    KEY,
                                    value.to_string().into(),
                                    PutOptions::if_matches(version.clone()),
                                )
                                .await;
                            let call = Call::Cas {
                                expected: *expected,
                                new: value,
                            };
                            (call, done(r.map(|_| ())))
                        }
                        None => {
                            let r = store
                                .put(KEY, value.to_string().into(), PutOptions::if_absent())
                                .await;
                            (Call::Create(value), done(r.map(|_| ())))
                        }
                    },
                    _ => {
                        let r = store.delete(KEY, Condition::Any).await;
                        (Call::Delete, r.map(|()| Ret::Done(true)))
                    }
                };
                let complete = now(start);
                let ret = match result {
                    Ok(ret) => ret,
                    Err(Error::Ambiguous { .. }) => Ret::Unknown,
                    // An injected error fails before reaching the store: nothing happened.
                    Err(Error::Unavailable { .. }) => continue,
                    Err(e) => panic!("client {c}: unexpected error {e}"),
                };
                history.lock().unwrap().push(Op {
                    client: c,
                    call,
                    ret,
                    invoke,
                    complete,
                });
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(history).unwrap().into_inner().unwrap()
}

/// A conditional write's result: landed, refused, or an error.
fn done(r: Result<(), Error>) -> Result<Ret, Error> {
    match r {
        Ok(()) => Ok(Ret::Done(true)),
        Err(Error::Conflict { .. }) => Ok(Ret::Done(false)),
        Err(e) => Err(e),
    }
}

/// The store's faults that a history can express: errors, S3's 409 and
/// brownouts (nothing happened), lost answers and late deliveries (the
/// write "maybe landed, maybe later": an unknown outcome completing at
/// infinity), with latency so writes in flight together reorder. Duplicated
/// delivery is left out on purpose: a raw conditional write answered with
/// the 412 of its own duplicate *is* a non-linearizable answer at this
/// level; the update loop, not the store, settles it (`tests/sim`).
fn faulty(inner: DynStore, seed: u64) -> DynStore {
    let ms = Duration::from_millis;
    Arc::new(FaultStore::new(
        inner,
        FaultConfig {
            error_rate: 0.05,
            lost_response_rate: 0.05,
            late_rate: 0.05,
            late_never: 0.3,
            late_delay: (Duration::ZERO, ms(20)),
            conflict_409_rate: 0.05,
            burst_rate: 0.2,
            burst_len: (1, 3),
            latency: (Duration::ZERO, ms(2)),
            ..FaultConfig::default()
        },
        SharedRng::seeded(seed),
    ))
}

async fn check_races(name: &str, make: impl Fn(u64) -> (DynStore, Option<TempDir>)) {
    let rounds = env_u64("RELIABILITY_HISTORY_ROUNDS", 1);
    let base = seed(name);
    for round in 0..rounds {
        let s = base.wrapping_add(round);
        let (store, _dir) = make(s);
        let h = race(store, 6, 40, s).await;
        let unknown = h.iter().filter(|o| o.ret == Ret::Unknown).count();
        println!(
            "{name}: round {round}: {} ops, {unknown} of unknown outcome",
            h.len()
        );
        assert!(h.len() >= 100, "too few operations recorded: {}", h.len());
        let initial: Value = None;
        assert_linearizable(&format!("{name} (seed {s})"), initial, &h);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_race_is_linearizable() {
    check_races("memory_race", |_| (Arc::new(MemoryStore::new()), None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_race_is_linearizable() {
    check_races("file_race", |_| {
        let dir = TempDir::new("hist");
        (Arc::new(FileStore::open(&dir.0).unwrap()), Some(dir))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_race_under_faults_is_linearizable() {
    check_races("memory_race_faults", |s| {
        (faulty(Arc::new(MemoryStore::new()), s), None)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_race_under_faults_is_linearizable() {
    check_races("file_race_faults", |s| {
        let dir = TempDir::new("histf");
        (
            faulty(Arc::new(FileStore::open(&dir.0).unwrap()), s),
            Some(dir),
        )
    })
    .await;
}

/// A store whose compare-and-swap is a read then a blind write (seed 003's
/// flaw): the checker must catch the lost updates it allows, or it proves nothing.
#[derive(Debug)]
struct CheckThenWrite(MemoryStore);

#[async_trait::async_trait]
impl intercept::Intercept for CheckThenWrite {
    fn inner(&self) -> &dyn Store {
        &self.0
    }
    fn describe(&self) -> String {
        "check-then-write".into()
    }
    async fn put(
        &self,
        key: &str,
        body: bytes::Bytes,
        opts: PutOptions,
    ) -> ifmatch::Result<Version> {
        let current = self.0.head(key).await.ok().map(|m| m.version);
        let ok = match &opts.condition {
            Condition::Any => true,
            Condition::Absent => current.is_none(),
            Condition::Matches(v) => current.as_ref() == Some(v),
        };
        if !ok {
            return Err(Error::conflict(key, opts.condition, current));
        }
        // The race window between the check and the write.
        tokio::time::sleep(std::time::Duration::from_micros(200)).await;
        self.0.put(key, body, PutOptions::any()).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_checker_catches_a_check_then_write_store() {
    let base = seed("check_then_write");
    // A violation is likely in every round; ten rounds make a miss vanishingly rare.
    for round in 0..10 {
        let store: DynStore = Arc::new(CheckThenWrite(MemoryStore::new()));
        let h = race(store, 6, 40, base.wrapping_add(round)).await;
        if crate::linearizability::check(None, &h)
            == crate::linearizability::Verdict::NotLinearizable
        {
            println!("caught in round {round}");
            return;
        }
    }
    panic!("ten racy histories on a check-then-write store all passed the checker");
}

//! Leases: mutual exclusion under contention (also with lost responses),
//! takeover of a silent holder within ttl + skew, owner-only renew and
//! release, fencing, and `with_lease` renewal and loss reporting.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use ifmatch::clock::{DynClock, ManualClock, SharedRng, SystemClock};
use ifmatch::lease::{
    FENCE_HEADER_MAGIC, FenceError, FencedValue, LeaseError, LeaseStatus, Leases, fenced_get,
    fenced_put, stored_token,
};
use ifmatch::retry::RetryPolicy;
use ifmatch::store::fault::{FaultConfig, FaultStore};
use ifmatch::store::intercept::{self, Call};
use ifmatch::store::{DynStore, Metadata, ObjectMeta, PutOptions, Store, Version};
use ifmatch::{Error, Result};

use crate::backends::local_backends as backends;

/// A clock for tests on every backend, remote ones included: a [`ManualClock`]
/// moves only when slept on, so network IO is not cut short by timeouts.
fn manual_clock() -> DynClock {
    Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ))
}

const SKEW: Duration = Duration::from_millis(500);

fn leases(store: &DynStore, clock: &DynClock, seed: u64, who: &str) -> Leases {
    Leases::new(store.clone())
        .with_clock(clock.clone())
        .with_rng(SharedRng::seeded(seed))
        .with_skew(SKEW)
        .with_poll_interval(Duration::from_millis(100))
        .with_holder_name(who)
}

fn policy(clock: &DynClock, seed: u64) -> RetryPolicy {
    RetryPolicy::default()
        .with_clock(clock.clone())
        .with_rng(SharedRng::seeded(seed))
}

/// One holder's tenure as the contender saw it.
#[derive(Debug, Clone)]
struct Tenure {
    token: u64,
    owner: String,
    acquired_at: SystemTime,
    released_at: SystemTime,
}

/// How long a contender waits for the lease at most (clock time).
const ACQUIRE_WAIT: Duration = Duration::from_secs(3600);

/// The shape of a contention test: `contenders` workers take the lease (for
/// `ttl`) `rounds` times each, polling about every `poll` while they wait.
#[derive(Clone, Copy, Debug)]
struct Contention {
    contenders: usize,
    rounds: usize,
    ttl: Duration,
    poll: Duration,
}

impl Contention {
    /// On tokio's paused clock (or the system clock): a 10 s TTL, polls every 100 ms.
    fn paused(contenders: usize, rounds: usize) -> Self {
        Contention {
            contenders,
            rounds,
            ttl: Duration::from_secs(10),
            poll: Duration::from_millis(100),
        }
    }

    /// On a [`ManualClock`], which only sleepers move: every waiter's poll
    /// nap moves the clock shared by all, at once, however fast the store
    /// answers. How many naps a tenure (or the whole test) costs depends on
    /// the store's speed in real time — under machine load a write (an
    /// fsync) can take as long as dozens of reads — so naps are made short
    /// ([`MANUAL_CLOCK_POLL`]): the wait budget ([`ACQUIRE_WAIT`]) and the
    /// TTL ([`MANUAL_CLOCK_TTL`]) then last a hundred times more polls than
    /// with 100 ms naps, and load cannot exhaust them. (The number of polls
    /// in real time is the same either way: a manual-clock nap only yields.)
    fn manual(contenders: usize, rounds: usize) -> Self {
        Contention {
            contenders,
            rounds,
            ttl: MANUAL_CLOCK_TTL,
            poll: MANUAL_CLOCK_POLL,
        }
    }
}

/// The poll interval of waiters on a [`ManualClock`] (see [`Contention::manual`]).
const MANUAL_CLOCK_POLL: Duration = Duration::from_millis(1);

/// The contenders of `shape` take the lease; returns every tenure. Prints
/// how long that took, and how much of the wait budget the clock used.
async fn contend(store: DynStore, clock: &DynClock, shape: Contention) -> Vec<Tenure> {
    let (t0, c0) = (std::time::Instant::now(), clock.now());
    let Contention {
        contenders,
        rounds,
        ttl,
        poll,
    } = shape;
    let history = Arc::new(Mutex::new(Vec::<Tenure>::new()));
    let holding = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..contenders {
        let l = leases(&store, clock, 1000 + c as u64, &format!("c{c}")).with_poll_interval(poll);
        let clock = clock.clone();
        let history = history.clone();
        let holding = holding.clone();
        let rng = SharedRng::seeded(5000 + c as u64);
        tasks.push(tokio::spawn(async move {
            for _ in 0..rounds {
                let lease = l
                    .acquire("job", ttl, ACQUIRE_WAIT)
                    .await
                    .expect("acquire within the wait budget");
                let acquired_at = clock.now();
                assert_eq!(
                    holding.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                // Work for a while (well inside the TTL), yielding to the others.
                clock.sleep(Duration::from_millis(rng.up_to(40))).await;
                tokio::task::yield_now().await;
                holding.fetch_sub(1, Ordering::SeqCst);
                let released_at = clock.now();
                l.release(&lease).await.expect("the owner can release");
                history.lock().unwrap().push(Tenure {
                    token: lease.token(),
                    owner: lease.owner().to_string(),
                    acquired_at,
                    released_at,
                });
                clock.sleep(Duration::from_millis(rng.up_to(30))).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut h = history.lock().unwrap().clone();
    h.sort_by_key(|t| (t.acquired_at, t.token));
    let used = clock.now().duration_since(c0).unwrap_or_default();
    eprintln!(
        "{}: {contenders} contenders x {rounds} rounds in {:?}; the clock moved {:.1} s ({:.2} % of the {} s wait budget)",
        store.describe(),
        t0.elapsed(),
        used.as_secs_f64(),
        100.0 * used.as_secs_f64() / ACQUIRE_WAIT.as_secs_f64(),
        ACQUIRE_WAIT.as_secs()
    );
    h
}

/// Checks that tenures never overlap and tokens strictly increase in time order.
fn check_history(name: &str, h: &[Tenure], expected: usize) {
    assert_eq!(h.len(), expected, "{name}: every round got the lease");
    for pair in h.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            b.acquired_at >= a.released_at,
            "{name}: {} acquired at {:?} before {} released at {:?}",
            b.owner,
            b.acquired_at,
            a.owner,
            a.released_at
        );
        assert!(
            b.token > a.token,
            "{name}: token {} after token {}",
            b.token,
            a.token
        );
    }
}

/// Contenders never overlap and tokens increase; the record keeps the last
/// token after release.
async fn contenders_never_overlap(name: &str, store: DynStore, clock: DynClock, shape: Contention) {
    let h = contend(store.clone(), &clock, shape).await;
    check_history(name, &h, shape.contenders * shape.rounds);
    let info = leases(&store, &clock, 1, "x")
        .inspect("job")
        .await
        .unwrap()
        .unwrap();
    assert!(info.released, "{name}");
    assert_eq!(info.token, h.last().unwrap().token, "{name}");
}

#[tokio::test(start_paused = true)]
async fn thirty_two_contenders_never_overlap_and_tokens_increase() {
    for (name, store) in backends() {
        let clock = SystemClock::shared();
        contenders_never_overlap(name, store, clock, Contention::paused(32, 4)).await;
    }
}

/// A TTL for contention on a [`ManualClock`]: every waiter's nap moves the
/// shared clock at once, so a tenure of a few real milliseconds can last
/// many clock seconds; the TTL is long enough that no live holder is ever
/// seen as expired.
const MANUAL_CLOCK_TTL: Duration = Duration::from_secs(600);

/// At most this many reads, and as many writes, of one contention test in
/// flight to a remote store. 32 waiters polling a server that answers one
/// request at a time (moto) would otherwise queue every other client, other
/// tests included, behind them; and with writes in their own lane a holder's
/// release is not stuck behind the waiters' polls.
const REMOTE_IN_FLIGHT: usize = 2;

/// `store`, with its requests limited to [`REMOTE_IN_FLIGHT`] reads and
/// writes at a time if it is remote.
fn throttled(name: &str, store: DynStore) -> DynStore {
    if matches!(name, "memory" | "file") {
        return store;
    }
    Arc::new(Throttled {
        inner: store,
        reads: tokio::sync::Semaphore::new(REMOTE_IN_FLIGHT),
        writes: tokio::sync::Semaphore::new(REMOTE_IN_FLIGHT),
    })
}

#[tokio::test]
async fn thirty_two_contenders_never_overlap_on_every_backend() {
    for (name, store) in crate::backends::backends().await {
        let store = throttled(name, store);
        contenders_never_overlap(name, store, manual_clock(), Contention::manual(32, 3)).await;
    }
}

/// Contention through a [`FaultStore`]: the tenures must still never overlap.
async fn contend_through_faults(
    stores: Vec<(&'static str, DynStore)>,
    clock: DynClock,
    config: FaultConfig,
    seed: u64,
    shape: Contention,
) {
    for (name, store) in stores {
        let fault = Arc::new(FaultStore::new(
            throttled(name, store),
            config.clone(),
            SharedRng::seeded(seed),
        ));
        let h = contend(fault.clone(), &clock, shape).await;
        check_history(name, &h, shape.contenders * shape.rounds);
        let c = fault.counters();
        let lost = c.lost_responses.load(Ordering::Relaxed);
        assert!(
            lost > 10,
            "{name}: only {lost} lost responses were injected"
        );
        if config.error_rate > 0.0 {
            assert!(c.errors.load(Ordering::Relaxed) > 10, "{name}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn contention_with_lost_responses_keeps_the_invariants() {
    // A lost acquire response may hide a lease that is ours: it is settled by
    // re-reading for our owner id, never by assuming either way.
    let config = FaultConfig {
        lost_response_rate: 0.10,
        ..FaultConfig::default()
    };
    let shape = Contention::paused(32, 3);
    contend_through_faults(backends(), SystemClock::shared(), config, 42, shape).await;
}

#[tokio::test]
async fn contention_with_lost_responses_on_every_backend() {
    // s3 and dynamodb (memory and file run above on the paused clock). No
    // injected errors here: the retries' deadline would be measured on a
    // manual clock that every sleeper moves.
    let config = FaultConfig {
        lost_response_rate: 0.10,
        ..FaultConfig::default()
    };
    let stores = crate::backends::remote_backends().await;
    let shape = Contention::manual(32, 3);
    contend_through_faults(stores, manual_clock(), config, 44, shape).await;
}

#[tokio::test(start_paused = true)]
async fn contention_with_errors_and_lost_responses_keeps_the_invariants() {
    let config = FaultConfig {
        error_rate: 0.05,
        lost_response_rate: 0.10,
        ..FaultConfig::default()
    };
    let shape = Contention::paused(32, 3);
    contend_through_faults(backends(), SystemClock::shared(), config, 43, shape).await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_holder_is_taken_over_within_ttl_plus_skew() {
    for (name, store) in backends() {
        silent_holder_taken_over(name, store, SystemClock::shared()).await;
    }
}

#[tokio::test]
async fn a_silent_holder_is_taken_over_on_every_backend() {
    for (name, store) in crate::backends::backends().await {
        silent_holder_taken_over(name, store, manual_clock()).await;
    }
}

/// Takeover of a holder that stops renewing, within ttl + skew; the old
/// holder can then neither renew nor release; tokens keep growing.
async fn silent_holder_taken_over(name: &str, store: DynStore, clock: DynClock) {
    let ttl = Duration::from_secs(10);
    // Long polls: the waiter must wake on the expiry it read, not on a poll.
    let a = leases(&store, &clock, 1, "a").with_poll_interval(Duration::from_secs(3600));
    let b = leases(&store, &clock, 2, "b").with_poll_interval(Duration::from_secs(3600));
    let mut la = a.acquire("res", ttl, Duration::ZERO).await.unwrap();
    let t0 = clock.now();

    // Until the lease lapses, others are told who holds it and for how long.
    match b.acquire("res", ttl, Duration::ZERO).await {
        Err(e @ LeaseError::Held { .. }) => {
            let LeaseError::Held {
                ref holder,
                expires_in,
                ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!(holder, la.owner(), "{name}");
            assert!(expires_in <= ttl && expires_in > ttl - Duration::from_secs(1));
            assert!(e.to_string().contains("res"), "{name}: {e}");
        }
        other => panic!("{name}: expected Held, got {other:?}"),
    }

    // A stops renewing (paused, crashed). B waits and takes over.
    clock.sleep(Duration::from_secs(7)).await;
    let lb = b
        .acquire("res", ttl, Duration::from_secs(60))
        .await
        .unwrap();
    let took = clock.now().duration_since(t0).unwrap();
    assert!(
        took >= ttl + SKEW,
        "{name}: taken over too early, after {took:?}"
    );
    assert!(
        took <= ttl + SKEW + Duration::from_millis(100),
        "{name}: takeover took {took:?}, not within ttl + skew"
    );
    assert!(lb.token() > la.token(), "{name}");

    // A, waking up, can neither renew nor release.
    match a.renew(&mut la).await {
        Err(LeaseError::NotOwner { holder, .. }) => {
            assert_eq!(holder.as_deref(), Some(lb.owner()), "{name}")
        }
        other => panic!("{name}: renew by a non-owner: {other:?}"),
    }
    assert!(
        matches!(a.release(&la).await, Err(LeaseError::NotOwner { .. })),
        "{name}"
    );
    // B still holds it, and can renew and release; releasing twice is fine.
    let mut lb = lb;
    let before = lb.expires_at();
    clock.sleep(Duration::from_secs(1)).await;
    b.renew(&mut lb).await.unwrap();
    assert!(lb.expires_at() > before, "{name}");
    b.release(&lb).await.unwrap();
    b.release(&lb).await.unwrap();
    // After B released, neither stale handle renews.
    assert!(matches!(
        b.renew(&mut lb).await,
        Err(LeaseError::NotOwner { .. })
    ));
    assert!(matches!(
        a.renew(&mut la).await,
        Err(LeaseError::NotOwner { .. })
    ));

    // A released lease is free at once, and the token keeps growing.
    let lc = a.acquire("res", ttl, Duration::ZERO).await.unwrap();
    assert!(lc.token() > lb.token(), "{name}");
    // A stale handle cannot release the new holder's lease.
    assert!(matches!(
        b.release(&lb).await,
        Err(LeaseError::NotOwner { .. })
    ));
    a.release(&lc).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_waiter_sees_an_early_release_without_waiting_for_expiry() {
    for (name, store) in backends() {
        let clock: DynClock = SystemClock::shared();
        let a = leases(&store, &clock, 1, "a");
        let b = leases(&store, &clock, 2, "b");
        let la = a
            .acquire("early", Duration::from_secs(60), Duration::ZERO)
            .await
            .unwrap();
        let t0 = clock.now();
        let waiter = tokio::spawn(async move {
            b.acquire("early", Duration::from_secs(60), Duration::from_secs(120))
                .await
        });
        clock.sleep(Duration::from_secs(2)).await;
        a.release(&la).await.unwrap();
        let lb = waiter.await.unwrap().unwrap();
        let waited = clock.now().duration_since(t0).unwrap();
        assert!(
            waited < Duration::from_millis(2200),
            "{name}: waited {waited:?}"
        );
        assert!(lb.token() > la.token(), "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_wait_budget_ends_in_held() {
    for (name, store) in backends() {
        let clock: DynClock = SystemClock::shared();
        let a = leases(&store, &clock, 1, "a");
        let b = leases(&store, &clock, 2, "b");
        let _la = a
            .acquire("busy", Duration::from_secs(60), Duration::ZERO)
            .await
            .unwrap();
        let t0 = clock.now();
        let err = b
            .acquire("busy", Duration::from_secs(60), Duration::from_secs(5))
            .await
            .unwrap_err();
        let waited = clock.now().duration_since(t0).unwrap();
        assert!(
            waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
            "{name}: {waited:?}"
        );
        match err {
            LeaseError::Held { expires_in, .. } => {
                assert!(
                    expires_in <= Duration::from_secs(55),
                    "{name}: {expires_in:?}"
                )
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn fenced_writes_reject_older_tokens() {
    for (name, store) in backends() {
        fenced_writes_reject_older(name, store, SystemClock::shared()).await;
    }
}

#[tokio::test]
async fn fenced_writes_reject_older_tokens_on_every_backend() {
    for (name, store) in crate::backends::backends().await {
        fenced_writes_reject_older(name, store, manual_clock()).await;
    }
}

/// A fenced write with an older token is refused after a takeover.
async fn fenced_writes_reject_older(name: &str, store: DynStore, clock: DynClock) {
    let p = policy(&clock, 3);
    let a = leases(&store, &clock, 1, "a");
    let ttl = Duration::from_secs(5);
    let la = a.acquire("fence", ttl, Duration::ZERO).await.unwrap();
    fenced_put(
        &*store,
        "data/x",
        "from a".into(),
        la.token(),
        Metadata::new(),
        &p,
    )
    .await
    .unwrap();
    // The same holder may write again.
    fenced_put(
        &*store,
        "data/x",
        "a again".into(),
        la.token(),
        Metadata::new(),
        &p,
    )
    .await
    .unwrap();
    // A pauses past its lease; B takes over and writes.
    clock.sleep(ttl + SKEW).await;
    let lb = a.acquire("fence", ttl, Duration::ZERO).await.unwrap();
    assert!(lb.token() > la.token());
    let mut md = Metadata::new();
    md.insert("writer".into(), "b".into());
    fenced_put(&*store, "data/x", "from b".into(), lb.token(), md, &p)
        .await
        .unwrap();
    // A wakes up and writes with its old token: refused, B's value stays.
    let err = fenced_put(
        &*store,
        "data/x",
        "stale".into(),
        la.token(),
        Metadata::new(),
        &p,
    )
    .await
    .unwrap_err();
    match &err {
        FenceError::Stale { token, stored, .. } => {
            assert_eq!((*token, *stored), (la.token(), lb.token()), "{name}")
        }
        other => panic!("{name}: {other:?}"),
    }
    assert!(err.to_string().contains("data/x"), "{name}: {err}");
    let o = fenced_get(&*store, "data/x").await.unwrap();
    assert_eq!(o.body, "from b", "{name}");
    assert_eq!(o.token, Some(lb.token()), "{name}");
    assert_eq!(o.meta.metadata.get("writer").map(String::as_str), Some("b"));
    assert_eq!(stored_token(&o.meta).unwrap(), Some(lb.token()), "{name}");
    // The stored bytes carry the token in a header in front of the value.
    let raw = store.get("data/x").await.unwrap();
    let header = format!("ifmatch-fence/1 {} ", lb.token());
    assert!(raw.body.starts_with(header.as_bytes()), "{name}: {raw:?}");
    assert!(raw.body.ends_with(b"\nfrom b"), "{name}: {raw:?}");
    assert_eq!(FencedValue::decode(raw).unwrap(), o, "{name}");
}

#[tokio::test]
async fn fenced_values_decode_plain_values_and_reject_bad_headers() {
    for (name, store) in backends() {
        // A value written by a plain put reads back whole, without a token.
        store
            .put("data/plain", "just bytes".into(), PutOptions::any())
            .await
            .unwrap();
        let v = fenced_get(&*store, "data/plain").await.unwrap();
        assert_eq!((v.body.as_ref(), v.token), (&b"just bytes"[..], None));
        // ... and a fenced write over it lands, since it carries no token.
        let p = policy(&manual_clock(), 9);
        fenced_put(&*store, "data/plain", "".into(), 7, Metadata::new(), &p)
            .await
            .unwrap();
        let v = fenced_get(&*store, "data/plain").await.unwrap();
        assert_eq!((v.body.as_ref(), v.token), (&b""[..], Some(7)), "{name}");
        // A header that does not parse is reported, naming the key.
        for bad in ["12 zz\nx", "12\nx", "twelve 00\nx", "12 00"] {
            let mut body = FENCE_HEADER_MAGIC.to_vec();
            body.extend_from_slice(bad.as_bytes());
            store
                .put("data/bad", body.into(), PutOptions::any())
                .await
                .unwrap();
            match fenced_get(&*store, "data/bad").await {
                Err(e @ FenceError::Corrupt { .. }) => {
                    assert!(e.to_string().contains("data/bad"), "{name}: {e}")
                }
                other => panic!("{name}: {bad:?} gave {other:?}"),
            }
        }
        assert!(matches!(
            fenced_get(&*store, "data/none").await,
            Err(FenceError::Store(Error::NotFound { .. }))
        ));
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_fenced_writers_cannot_both_pass_the_check() {
    // Many writers with different tokens race; the stored token only ever grows,
    // and the final value is the one written with the highest token that landed.
    for (name, store) in backends() {
        let clock: DynClock = SystemClock::shared();
        let mut tasks = Vec::new();
        for t in 1..=16u64 {
            let store = store.clone();
            let p = policy(&clock, t).with_max_attempts(100);
            tasks.push(tokio::spawn(async move {
                let r = fenced_put(
                    &*store,
                    "data/race",
                    Bytes::from(t.to_string()),
                    t,
                    Metadata::new(),
                    &p,
                )
                .await;
                (t, r)
            }));
        }
        let mut landed = Vec::new();
        for task in tasks {
            let (t, r) = task.await.unwrap();
            match r {
                Ok(_) => landed.push(t),
                Err(FenceError::Stale { token, stored, .. }) => assert!(stored > token),
                Err(e) => panic!("{name}: {e}"),
            }
        }
        let o = fenced_get(&*store, "data/race").await.unwrap();
        let max = *landed.iter().max().unwrap();
        assert_eq!(o.token, Some(max), "{name}");
        assert_eq!(o.body, max.to_string(), "{name}");
        assert_eq!(max, 16, "{name}: the highest token always lands");
    }
}

#[tokio::test(start_paused = true)]
async fn with_lease_renews_while_the_work_runs_and_then_releases() {
    for (name, store) in backends() {
        // Work for ten TTLs; the lease must stay ours throughout.
        let shape = (Duration::from_secs(3), Duration::from_millis(1500), 20);
        with_lease_renews(name, store, SystemClock::shared(), shape).await;
    }
}

#[tokio::test]
async fn with_lease_renews_and_reports_a_lost_lease_on_every_backend() {
    // s3 and dynamodb (memory and file run on the paused clock). On the
    // manual clock every sleeper moves time, so the work's steps are short
    // beside the TTL: a renewal is never more than a few steps late.
    for (name, store) in crate::backends::remote_backends().await {
        let shape = (Duration::from_secs(30), Duration::from_millis(1500), 40);
        with_lease_renews(name, store.clone(), manual_clock(), shape).await;
        with_lease_reports_loss(name, store, manual_clock()).await;
    }
}

/// `with_lease` over work of `steps` sleeps of `step`: the lease is held (and
/// refused to another worker) after every step, and released at the end.
async fn with_lease_renews(
    name: &str,
    store: DynStore,
    clock: DynClock,
    (ttl, step, steps): (Duration, Duration, usize),
) {
    let a = leases(&store, &clock, 1, "a");
    let b = leases(&store, &clock, 2, "b");
    let out = a
        .with_lease("long", ttl, Duration::ZERO, |guard| {
            let b = b.clone();
            let clock = clock.clone();
            async move {
                for _ in 0..steps {
                    clock.sleep(step).await;
                    assert!(guard.is_held(), "{name}: {:?}", guard.status());
                    let err = b.acquire("long", ttl, Duration::ZERO).await.unwrap_err();
                    assert!(matches!(err, LeaseError::Held { .. }), "{name}: {err}");
                }
                guard.token()
            }
        })
        .await
        .unwrap();
    let info = a.inspect("long").await.unwrap().unwrap();
    assert!(info.released, "{name}");
    assert_eq!(info.token, out, "{name}");
}

#[tokio::test(start_paused = true)]
async fn with_lease_keeps_the_lease_through_lost_renewal_responses() {
    // A renewal that landed but lost its response must not look like a lost lease.
    for (name, store) in backends() {
        let fault: DynStore = Arc::new(FaultStore::new(
            store,
            FaultConfig {
                lost_response_rate: 0.3,
                ..FaultConfig::default()
            },
            SharedRng::seeded(11),
        ));
        let clock: DynClock = SystemClock::shared();
        let a = leases(&fault, &clock, 1, "a");
        let ttl = Duration::from_secs(3);
        let held_throughout = a
            .with_lease("bumpy", ttl, Duration::from_secs(10), |guard| {
                let clock = clock.clone();
                async move {
                    let mut held = true;
                    for _ in 0..40 {
                        clock.sleep(Duration::from_millis(500)).await;
                        held &= guard.is_held();
                    }
                    held
                }
            })
            .await
            .unwrap();
        assert!(held_throughout, "{name}");
        let info = a.inspect("bumpy").await.unwrap().unwrap();
        assert!(info.released, "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn with_lease_reports_a_lease_lost_to_another_holder() {
    for (name, store) in backends() {
        with_lease_reports_loss(name, store, SystemClock::shared()).await;
    }
}

/// A lease taken over under `with_lease` is reported as lost, and the new
/// holder's record is left alone.
async fn with_lease_reports_loss(name: &str, store: DynStore, clock: DynClock) {
    let a = leases(&store, &clock, 1, "a");
    let key = a.key("stolen");
    let status = a
        .with_lease("stolen", Duration::from_secs(3), Duration::ZERO, |guard| {
            let store = store.clone();
            let clock = clock.clone();
            async move {
                clock.sleep(Duration::from_millis(500)).await;
                // Simulate a takeover by a worker whose clock ran far ahead.
                let now = ifmatch_ms(clock.now());
                let intruder = serde_json::json!({
                    "name": "stolen", "state": "held", "owner": "intruder",
                    "token": guard.token() + 1, "acquired_at_ms": now,
                    "expires_at_ms": now + 60_000, "updated_at_ms": now,
                });
                store
                    .put(&key, intruder.to_string().into(), PutOptions::any())
                    .await
                    .unwrap();
                guard.lost().await
            }
        })
        .await
        .unwrap();
    match status {
        LeaseStatus::Lost { holder, found } => {
            assert_eq!(holder.as_deref(), Some("intruder"), "{name}");
            assert!(found.contains("intruder"), "{name}: {found}");
        }
        other => panic!("{name}: {other:?}"),
    }
    // The intruder's record was left alone.
    let info = a.inspect("stolen").await.unwrap().unwrap();
    assert_eq!(info.owner, "intruder", "{name}");
}

#[tokio::test(start_paused = true)]
async fn with_lease_reports_an_unreachable_store_before_the_lease_expires() {
    for (name, store) in backends() {
        let clock: DynClock = SystemClock::shared();
        let down = Arc::new(AtomicBool::new(false));
        let flaky: DynStore = Arc::new(Switchable {
            inner: store,
            down: down.clone(),
            lose_next_put_then_down: AtomicBool::new(false),
        });
        let a = leases(&flaky, &clock, 1, "a");
        let ttl = Duration::from_secs(6);
        let (status, at, started) = a
            .with_lease("net", ttl, Duration::ZERO, |guard| {
                let clock = clock.clone();
                let down = down.clone();
                async move {
                    let started = clock.now();
                    down.store(true, Ordering::SeqCst);
                    let s = guard.lost().await;
                    down.store(false, Ordering::SeqCst);
                    (s, clock.now(), started)
                }
            })
            .await
            .unwrap();
        assert!(
            matches!(status, LeaseStatus::Unavailable { .. }),
            "{name}: {status:?}"
        );
        let told = at.duration_since(started).unwrap();
        assert!(
            told < ttl - ttl / 3 + Duration::from_millis(10),
            "{name}: told after {told:?}, too close to the expiry"
        );
        assert!(told >= ttl / 3, "{name}: told after {told:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_unsettled_acquire_is_reported_as_ambiguous_not_as_failure() {
    for (name, store) in backends() {
        let clock: DynClock = SystemClock::shared();
        let down = Arc::new(AtomicBool::new(false));
        let flaky = Arc::new(Switchable {
            inner: store.clone(),
            down: down.clone(),
            lose_next_put_then_down: AtomicBool::new(true),
        });
        let flaky_dyn: DynStore = flaky.clone();
        let a = leases(&flaky_dyn, &clock, 1, "a");
        let ttl = Duration::from_secs(10);
        // The acquire lands, its response is lost, and the store goes down.
        let err = a.acquire("dim", ttl, Duration::ZERO).await.unwrap_err();
        assert!(
            matches!(err, LeaseError::Ambiguous { .. }),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains("lapses"), "{name}: {err}");
        // It had landed: the orphaned lease is taken over once it lapses.
        down.store(false, Ordering::SeqCst);
        let b = leases(&store, &clock, 2, "b");
        let info = b.inspect("dim").await.unwrap().unwrap();
        assert!(info.owner.starts_with("a-") && !info.released, "{name}");
        let t0 = clock.now();
        let lb = b
            .acquire("dim", ttl, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(clock.now().duration_since(t0).unwrap() <= ttl + SKEW + Duration::from_millis(100));
        assert!(lb.token() > info.token, "{name}");
    }
}

fn ifmatch_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A store that answers `Unavailable` to everything while `down` is set, and
/// can lose the response of its next put and then go down.
#[derive(Debug)]
struct Switchable {
    inner: DynStore,
    down: Arc<AtomicBool>,
    lose_next_put_then_down: AtomicBool,
}

impl Switchable {
    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            Err(Error::Unavailable {
                message: "switched off".into(),
                source: None,
            })
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl intercept::Intercept for Switchable {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
    fn describe(&self) -> String {
        format!("switchable({})", self.inner.describe())
    }
    async fn around<R: Send, F>(&self, _call: Call<'_>, run: F) -> Result<R>
    where
        F: std::future::Future<Output = Result<R>> + Send,
    {
        self.check()?;
        run.await
    }
    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<Version> {
        let landed = self.inner.put(key, body, opts).await;
        if self.lose_next_put_then_down.swap(false, Ordering::SeqCst) {
            self.down.store(true, Ordering::SeqCst);
            return Err(Error::Ambiguous {
                key: key.to_string(),
                message: format!("response lost ({:?})", landed.map(|_| "landed")),
            });
        }
        landed
    }
}

/// Runs a one-shot action right after the first `head` answers, to slip
/// another writer in between a fenced write's check and its put.
struct AfterFirstHead {
    inner: DynStore,
    action: tokio::sync::Mutex<Option<futures::future::BoxFuture<'static, ()>>>,
}

impl std::fmt::Debug for AfterFirstHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AfterFirstHead")
    }
}

#[async_trait]
impl intercept::Intercept for AfterFirstHead {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let meta = self.inner.head(key).await;
        let action = self.action.lock().await.take();
        if let Some(action) = action {
            action.await;
        }
        meta
    }
}

#[tokio::test]
async fn a_newer_token_with_the_same_body_still_fences_off_an_older_one() {
    // On S3 a version is a hash of the stored bytes: were the token only in
    // metadata, a newer holder writing the bytes already stored would not
    // move the version, so an older holder that checked the old token against
    // that version would still land and the stored token would go back down.
    // The token (and a write id) in the value's header move the version.
    for (name, store) in crate::backends::backends().await {
        let clock = manual_clock();
        let p = policy(&clock, 3);
        let body = Bytes::from_static(b"same bytes");
        fenced_put(&*store, "data/same", body.clone(), 1, Metadata::new(), &p)
            .await
            .unwrap();
        // Between the old holder's check and its put, the new holder writes.
        let newer = {
            let store = store.clone();
            let body = body.clone();
            let p = p.clone();
            Box::pin(async move {
                fenced_put(&*store, "data/same", body, 2, Metadata::new(), &p)
                    .await
                    .unwrap();
            })
        };
        let racing: DynStore = Arc::new(AfterFirstHead {
            inner: store.clone(),
            action: tokio::sync::Mutex::new(Some(newer)),
        });
        let old = fenced_put(&*racing, "data/same", body.clone(), 1, Metadata::new(), &p).await;
        assert!(
            matches!(
                old,
                Err(FenceError::Stale {
                    token: 1,
                    stored: 2,
                    ..
                })
            ),
            "{name}: {old:?}"
        );
        let meta = store.head("data/same").await.unwrap();
        assert_eq!(stored_token(&meta).unwrap(), Some(2), "{name}");
        let v = fenced_get(&*store, "data/same").await.unwrap();
        assert_eq!((v.body, v.token), (body, Some(2)), "{name}");
    }
}

/// A store that lets at most a fixed number of reads, and of writes, through at a time.
#[derive(Debug)]
struct Throttled {
    inner: DynStore,
    reads: tokio::sync::Semaphore,
    writes: tokio::sync::Semaphore,
}

impl Throttled {
    async fn read(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.reads.acquire().await.expect("never closed")
    }
    async fn write(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.writes.acquire().await.expect("never closed")
    }
}

#[async_trait]
impl intercept::Intercept for Throttled {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
    async fn around<R: Send, F>(&self, call: Call<'_>, run: F) -> Result<R>
    where
        F: std::future::Future<Output = Result<R>> + Send,
    {
        let _p = if call.op.is_write() {
            self.write().await
        } else {
            self.read().await
        };
        run.await
    }
}

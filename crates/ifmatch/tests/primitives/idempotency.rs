//! Idempotency, after seed 004 (an SQS consumer scaled out to several
//! containers): duplicates get the stored result, unique messages all run,
//! stale claims are taken over, payload reuse is caught, failures release the
//! claim, completed records expire.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ifmatch::clock::{DynClock, ManualClock, SharedRng, SystemClock};
use ifmatch::idempotency::{Idempotency, IdempotencyError, Outcome, RecordState};
use ifmatch::store::DynStore;
use ifmatch::store::fault::{FaultConfig, FaultStore};
use serde::{Deserialize, Serialize};

use crate::backends::local_backends as backends;

/// A clock for tests on every backend, remote ones included: a [`ManualClock`]
/// moves only when slept on, so network IO is not cut short by timeouts.
fn manual_clock() -> DynClock {
    Arc::new(ManualClock::new(
        std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Message {
    request_id: String,
    url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Screenshot {
    s3_url: String,
    taken_by: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Boom(String);

fn worker(store: &DynStore, clock: &DynClock, seed: u64) -> Idempotency {
    Idempotency::new(store.clone())
        .with_clock(clock.clone())
        .with_rng(SharedRng::seeded(seed))
}

fn message(id: &str) -> Message {
    Message {
        request_id: id.to_string(),
        url: format!("https://example.com/{id}"),
    }
}

/// `workers` consumers share one queue of deliveries; each delivery runs the
/// "screenshot" handler through idempotency. Returns the outcomes and the
/// number of handler executions.
async fn consume(
    store: DynStore,
    clock: &DynClock,
    deliveries: Vec<Message>,
    workers: usize,
    wait: Duration,
) -> (Vec<Outcome<Screenshot>>, usize) {
    let queue = Arc::new(Mutex::new(VecDeque::from(deliveries)));
    let executions = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let idem = worker(&store, clock, 100 + w as u64)
            .with_wait(wait, Duration::from_millis(50))
            .with_cache(16);
        let queue = queue.clone();
        let executions = executions.clone();
        let clock = clock.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            loop {
                let Some(msg) = queue.lock().unwrap().pop_front() else {
                    break;
                };
                let key = format!("screenshots/{}", msg.request_id);
                let executions = executions.clone();
                let clock = clock.clone();
                let id = msg.request_id.clone();
                let out = idem
                    .run(&key, &msg, || async move {
                        executions.fetch_add(1, Ordering::SeqCst);
                        // Taking a screenshot takes a while.
                        clock.sleep(Duration::from_millis(300)).await;
                        Ok::<_, Boom>(Screenshot {
                            s3_url: format!("s3://shots/{id}.png"),
                            taken_by: w,
                        })
                    })
                    .await
                    .expect("every delivery gets a result");
                outcomes.push(out);
                tokio::task::yield_now().await;
            }
            outcomes
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all, executions.load(Ordering::SeqCst))
}

/// Seed 004: 50 deliveries of one message across 4 workers run it once.
async fn fifty_deliveries_run_once(name: &str, store: DynStore, clock: DynClock) {
    let deliveries = vec![message("req-1"); 50];
    // The wait budget is on `clock`; a `ManualClock` moves on every waiter's
    // poll, so a generous budget keeps a slow remote store (the completion
    // write queued behind many polls) from ending the wait early.
    let (outcomes, executions) =
        consume(store, &clock, deliveries, 4, Duration::from_secs(600)).await;
    assert_eq!(executions, 1, "{name}");
    assert_eq!(outcomes.len(), 50, "{name}");
    let executed: Vec<_> = outcomes.iter().filter(|o| !o.is_duplicate()).collect();
    assert_eq!(executed.len(), 1, "{name}");
    let dups = outcomes.iter().filter(|o| o.is_duplicate()).count();
    assert_eq!(dups, 49, "{name}");
    // Every duplicate received the stored result of the one execution.
    let first = executed[0].value();
    assert!(outcomes.iter().all(|o| o.value() == first), "{name}");
}

#[tokio::test(start_paused = true)]
async fn fifty_deliveries_of_one_message_run_once() {
    for (name, store) in backends() {
        fifty_deliveries_run_once(name, store, SystemClock::shared()).await;
    }
}

#[tokio::test]
async fn fifty_deliveries_of_one_message_run_once_on_every_backend() {
    for (name, store) in crate::backends::backends().await {
        fifty_deliveries_run_once(name, store, manual_clock()).await;
    }
}

/// `n` unique messages across 3 workers all run, spread across the workers.
async fn unique_messages_all_run(name: &str, store: DynStore, clock: DynClock, n: usize) {
    let deliveries = (0..n).map(|i| message(&format!("u-{i}"))).collect();
    let (outcomes, executions) = consume(store, &clock, deliveries, 3, Duration::ZERO).await;
    assert_eq!(executions, n, "{name}");
    assert!(outcomes.iter().all(|o| !o.is_duplicate()), "{name}");
    for w in 0..3 {
        assert!(
            outcomes.iter().any(|o| o.value().taken_by == w),
            "{name}: worker {w} did nothing"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_hundred_unique_messages_all_run() {
    for (name, store) in backends() {
        unique_messages_all_run(name, store, SystemClock::shared(), 100).await;
    }
}

#[tokio::test]
async fn unique_messages_all_run_on_every_backend() {
    // 30, not 100: each message costs a claim and a completion write.
    for (name, store) in crate::backends::backends().await {
        unique_messages_all_run(name, store, manual_clock(), 30).await;
    }
}

#[tokio::test(start_paused = true)]
async fn duplicates_with_errors_and_lost_responses_still_run_once() {
    for (name, store) in backends() {
        let fault = Arc::new(FaultStore::new(
            store,
            FaultConfig {
                error_rate: 0.05,
                lost_response_rate: 0.20,
                ..FaultConfig::default()
            },
            SharedRng::seeded(9),
        ));
        let mut deliveries = Vec::new();
        for i in 0..30 {
            for _ in 0..5 {
                deliveries.push(message(&format!("f-{i}")));
            }
        }
        let (outcomes, executions) = consume(
            fault.clone(),
            &SystemClock::shared(),
            deliveries,
            4,
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(executions, 30, "{name}");
        assert_eq!(outcomes.iter().filter(|o| o.is_duplicate()).count(), 120);
        let c = fault.counters();
        assert!(c.lost_responses.load(Ordering::Relaxed) > 0, "{name}");
        assert!(c.errors.load(Ordering::Relaxed) > 0, "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_concurrent_duplicate_is_told_in_progress_or_waits_within_a_bound() {
    for (name, store) in backends() {
        let clock: DynClock = SystemClock::shared();
        let a = worker(&store, &clock, 1);
        let slow = {
            let a = a.clone();
            let clock = clock.clone();
            tokio::spawn(async move {
                a.run("k", "p", || async move {
                    clock.sleep(Duration::from_secs(10)).await;
                    Ok::<_, Boom>(7u32)
                })
                .await
            })
        };
        clock.sleep(Duration::from_secs(1)).await;
        // No waiting configured: told at once.
        let err = worker(&store, &clock, 2)
            .run("k", "p", || async { Ok::<_, Boom>(0u32) })
            .await
            .unwrap_err();
        match &err {
            IdempotencyError::InProgress { key, age, .. } => {
                assert_eq!(key, "k");
                assert!(*age >= Duration::from_secs(1), "{name}: {age:?}");
            }
            other => panic!("{name}: {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("'k'") && msg.contains("in-progress"), "{msg}");
        // Waiting 2 s is not enough: InProgress after about 2 s.
        let t0 = clock.now();
        let err = worker(&store, &clock, 3)
            .with_wait(Duration::from_secs(2), Duration::from_millis(100))
            .run("k", "p", || async { Ok::<_, Boom>(0u32) })
            .await
            .unwrap_err();
        let waited = clock.now().duration_since(t0).unwrap();
        assert!(matches!(err, IdempotencyError::InProgress { .. }), "{name}");
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100),
            "{name}: {waited:?}"
        );
        // Waiting 30 s is: the stored result arrives.
        let out = worker(&store, &clock, 4)
            .with_wait(Duration::from_secs(30), Duration::from_millis(100))
            .run("k", "p", || async { Ok::<_, Boom>(0u32) })
            .await
            .unwrap();
        assert_eq!(out, Outcome::Duplicate(7), "{name}");
        assert_eq!(slow.await.unwrap().unwrap(), Outcome::Executed(7), "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_stale_in_progress_claim_is_taken_over() {
    for (name, store) in backends() {
        stale_claim_taken_over(name, store, SystemClock::shared()).await;
    }
}

#[tokio::test]
async fn a_stale_in_progress_claim_is_taken_over_on_every_backend() {
    for (name, store) in crate::backends::backends().await {
        stale_claim_taken_over(name, store, manual_clock()).await;
    }
}

/// A claim older than the in-progress timeout is taken over; the hung
/// worker's late result is not stored over the new one.
async fn stale_claim_taken_over(name: &str, store: DynStore, clock: DynClock) {
    let timeout = Duration::from_secs(600);
    let a = worker(&store, &clock, 1);
    // Worker A claims the key, then hangs (until told to finish).
    let (claimed_tx, claimed_rx) = tokio::sync::oneshot::channel::<()>();
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
    let hung = {
        let a = a.clone();
        tokio::spawn(async move {
            a.run("job", "payload", || async move {
                let _ = claimed_tx.send(());
                let _ = finish_rx.await;
                Ok::<_, Boom>("from a".to_string())
            })
            .await
        })
    };
    claimed_rx.await.unwrap();
    clock.sleep(Duration::from_secs(60)).await;
    let b = worker(&store, &clock, 2);
    let err = b
        .run("job", "payload", || async {
            Ok::<_, Boom>("from b".to_string())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, IdempotencyError::InProgress { .. }), "{name}");
    // After the in-progress timeout, B takes the claim over and runs.
    clock.sleep(timeout).await;
    let out = b
        .run("job", "payload", || async {
            Ok::<_, Boom>("from b".to_string())
        })
        .await
        .unwrap();
    assert_eq!(out, Outcome::Executed("from b".to_string()), "{name}");
    // When A finally finishes, its result is not stored over B's.
    finish_tx.send(()).unwrap();
    match hung.await.unwrap() {
        Err(IdempotencyError::NotSaved {
            key,
            result,
            reason,
        }) => {
            assert_eq!(key, "job");
            assert_eq!(result, serde_json::json!("from a"));
            assert!(reason.contains("taken over"), "{name}: {reason}");
        }
        other => panic!("{name}: {other:?}"),
    }
    let c = worker(&store, &clock, 3);
    let out = c
        .run("job", "payload", || async {
            Ok::<_, Boom>("from c".to_string())
        })
        .await
        .unwrap();
    assert_eq!(out, Outcome::Duplicate("from b".to_string()), "{name}");
}

#[tokio::test(start_paused = true)]
async fn two_workers_racing_for_a_stale_claim_run_it_once() {
    for (name, store) in backends() {
        let clock: DynClock = SystemClock::shared();
        let dead = worker(&store, &clock, 1);
        let hung = {
            let clock = clock.clone();
            tokio::spawn(async move {
                dead.run("race", "p", || async move {
                    clock.sleep(Duration::from_secs(100_000)).await;
                    Ok::<_, Boom>(0u32)
                })
                .await
            })
        };
        clock.sleep(Duration::from_secs(601)).await;
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            let idem = worker(&store, &clock, 10 + w)
                .with_wait(Duration::from_secs(30), Duration::from_millis(50));
            let runs = runs.clone();
            tasks.push(tokio::spawn(async move {
                idem.run("race", "p", || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Boom>(w as u32 + 1)
                })
                .await
                .unwrap()
            }));
        }
        let mut values = Vec::new();
        for t in tasks {
            values.push(t.await.unwrap().into_value());
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{name}");
        assert!(values.iter().all(|v| *v == values[0]), "{name}");
        hung.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn the_same_key_with_another_payload_is_a_mismatch() {
    for (name, store) in backends() {
        payload_mismatch(name, store, SystemClock::shared()).await;
    }
}

#[tokio::test]
async fn the_same_key_with_another_payload_is_a_mismatch_on_every_backend() {
    for (name, store) in crate::backends::backends().await {
        payload_mismatch(name, store, manual_clock()).await;
    }
}

/// The same key with another payload is a mismatch, through the cache and the store.
async fn payload_mismatch(name: &str, store: DynStore, clock: DynClock) {
    let w = worker(&store, &clock, 1).with_cache(8);
    let out = w
        .run("order-7", &message("a"), || async { Ok::<_, Boom>(1u8) })
        .await
        .unwrap();
    assert_eq!(out, Outcome::Executed(1));
    // Through the cache and through the store alike.
    for w in [w.clone(), worker(&store, &clock, 2)] {
        let err = w
            .run("order-7", &message("b"), || async { Ok::<_, Boom>(2u8) })
            .await
            .unwrap_err();
        match &err {
            IdempotencyError::PayloadMismatch { key, state, .. } => {
                assert_eq!(key, "order-7");
                assert_eq!(*state, RecordState::Completed);
            }
            other => panic!("{name}: {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("'order-7'") && msg.contains("completed"),
            "{msg}"
        );
    }
    // The original payload still gets its result.
    let out = worker(&store, &clock, 3)
        .run("order-7", &message("a"), || async { Ok::<_, Boom>(3u8) })
        .await
        .unwrap();
    assert_eq!(out, Outcome::Duplicate(1), "{name}");
}

#[tokio::test(start_paused = true)]
async fn a_handler_failure_releases_the_claim_and_a_retry_runs() {
    for (name, store) in backends() {
        let clock: DynClock = SystemClock::shared();
        let w = worker(&store, &clock, 1);
        let err = w
            .run("flaky", "p", || async {
                Err::<u32, _>(Boom("timeout".into()))
            })
            .await
            .unwrap_err();
        match &err {
            IdempotencyError::Handler {
                key,
                released,
                source,
            } => {
                assert_eq!(key, "flaky");
                assert!(released, "{name}");
                assert_eq!(source.0, "timeout");
            }
            other => panic!("{name}: {other:?}"),
        }
        assert!(err.to_string().contains("'flaky'"));
        assert!(store.head(&w.record_key("flaky")).await.is_err(), "{name}");
        let out = worker(&store, &clock, 2)
            .run("flaky", "p", || async { Ok::<_, Boom>(5u32) })
            .await
            .unwrap();
        assert_eq!(out, Outcome::Executed(5), "{name}");
    }
}

#[tokio::test]
async fn completed_records_expire_and_run_again() {
    for (name, store) in backends() {
        let manual = ManualClock::new(
            std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        let clock: DynClock = Arc::new(manual.clone());
        let w = worker(&store, &clock, 1)
            .with_completed_ttl(Duration::from_secs(3600))
            .with_cache(8);
        let runs = AtomicUsize::new(0);
        let handler = || async { Ok::<_, Boom>(runs.fetch_add(1, Ordering::SeqCst) as u32) };
        assert_eq!(
            w.run("daily", "p", handler).await.unwrap(),
            Outcome::Executed(0)
        );
        // The record carries its expiry for DynamoDB TTL.
        let meta = store.head(&w.record_key("daily")).await.unwrap();
        assert_eq!(meta.expires_at, Some(1_700_000_000 + 3600), "{name}");
        manual.advance(Duration::from_secs(1800));
        assert_eq!(
            w.run("daily", "p", handler).await.unwrap(),
            Outcome::Duplicate(0)
        );
        manual.advance(Duration::from_secs(1801));
        // Expired: counts as absent (in the cache too), replaced conditionally.
        assert_eq!(
            w.run("daily", "p", handler).await.unwrap(),
            Outcome::Executed(1)
        );
        // An expired record does not hold its payload against a new one.
        manual.advance(Duration::from_secs(3601));
        assert_eq!(
            worker(&store, &clock, 2)
                .run("daily", "other", handler)
                .await
                .unwrap(),
            Outcome::Executed(2),
            "{name}"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }
}

#[tokio::test(start_paused = true)]
async fn inspect_reports_a_record_without_touching_it() {
    for (name, store) in backends() {
        let clock: DynClock = SystemClock::shared();
        let idem = worker(&store, &clock, 21);
        assert!(idem.inspect("none").await.unwrap().is_none(), "{name}");
        // In progress while the handler runs.
        let slow = {
            let idem = idem.clone();
            let clock = clock.clone();
            tokio::spawn(async move {
                idem.run("job/1", "payload", || async move {
                    clock.sleep(Duration::from_secs(5)).await;
                    Ok::<_, Boom>(42u32)
                })
                .await
            })
        };
        clock.sleep(Duration::from_secs(1)).await;
        let info = idem.inspect("job/1").await.unwrap().expect("a record");
        assert_eq!(info.state, RecordState::InProgress, "{name}");
        assert_eq!(info.result, None, "{name}");
        assert_eq!(
            info.payload_hash,
            ifmatch::idempotency::payload_hash("payload").unwrap()
        );
        assert!(info.expires_at > info.claimed_at, "{name}");
        slow.await.unwrap().unwrap();
        let done = idem.inspect("job/1").await.unwrap().expect("a record");
        assert_eq!(done.state, RecordState::Completed, "{name}");
        assert_eq!(done.result, Some(serde_json::json!(42)), "{name}");
        assert_eq!(done.claimed_at, info.claimed_at, "{name}");
        assert!(done.updated_at > info.updated_at, "{name}");
        assert_ne!(done.version, info.version, "{name}");
        // Inspecting changed nothing: a duplicate still gets the stored result.
        let again = idem
            .run("job/1", "payload", || async { Ok::<_, Boom>(0u32) })
            .await
            .unwrap();
        assert_eq!(again, Outcome::Duplicate(42), "{name}");
        assert!(matches!(
            idem.inspect("bad\nkey").await,
            Err(IdempotencyError::Invalid(_))
        ));
    }
}

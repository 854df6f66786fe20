//! The build guard: one build at a time, waiters take its result, expired markers are taken over.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::future::join_all;
use ifmatch::ErrorKind;
use ifmatch::clock::SharedRng;
use ifmatch::snapshot::{BuildGuard, PublishOutcome, Snapshots, StoreBuildGuard};

use crate::backends::local_backends as backends;
use crate::{body, config};

fn guard(store: ifmatch::DynStore, seed: u64) -> Arc<StoreBuildGuard> {
    Arc::new(
        StoreBuildGuard::new(store, Duration::from_secs(30))
            .with_clock(crate::clock())
            .with_rng(SharedRng::seeded(seed)),
    )
}

#[tokio::test(start_paused = true)]
async fn ten_guarded_publishers_build_once() {
    for (label, raw) in backends() {
        let builds = Arc::new(AtomicU32::new(0));
        let publishers: Vec<Snapshots> = (0..10)
            .map(|i| {
                Snapshots::with_config(
                    raw.clone(),
                    config(i).with_guard(guard(raw.clone(), 50 + i)),
                )
            })
            .collect();
        let runs = publishers.iter().map(|s| {
            let builds = builds.clone();
            async move {
                s.publish("quotes", |ctx| {
                    builds.fetch_add(1, Ordering::SeqCst);
                    async move {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        Ok::<_, ifmatch::error::BoxError>(body(ctx.version, "guarded"))
                    }
                })
                .await
                .unwrap()
            }
        });
        let outcomes = join_all(runs).await;
        assert_eq!(builds.load(Ordering::SeqCst), 1, "{label}: one build");
        let published = outcomes.iter().filter(|o| o.is_published()).count();
        assert_eq!(published, 1, "{label}");
        assert!(
            outcomes.iter().all(|o| o.version() == 1),
            "{label}: {outcomes:?}"
        );
        let waits: u64 = publishers
            .iter()
            .map(|p| p.metrics().to_map()["guard_waits"])
            .sum();
        assert_eq!(waits, 9, "{label}");
        // The marker is gone once the build is done.
        let marker = raw.head("snapshots/quotes/building").await.unwrap_err();
        assert_eq!(marker.kind(), ErrorKind::NotFound, "{label}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_waiter_rebuilds_when_the_running_build_started_before_it_asked() {
    for (label, raw) in backends() {
        let first =
            Snapshots::with_config(raw.clone(), config(1).with_guard(guard(raw.clone(), 1)));
        let second =
            Snapshots::with_config(raw.clone(), config(2).with_guard(guard(raw.clone(), 2)));
        let slow = first.publish("quotes", |ctx| async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok::<_, ifmatch::error::BoxError>(body(ctx.version, "first"))
        });
        // Asked a second into the first build: the data it wants is newer than that build's.
        let late = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            second
                .publish(
                    "quotes",
                    |ctx| async move { Ok(body(ctx.version, "second")) },
                )
                .await
        };
        let (a, b) = tokio::join!(slow, late);
        assert_eq!(a.unwrap().version(), 1, "{label}");
        let b = b.unwrap();
        assert!(
            matches!(b, PublishOutcome::Published(ref p) if p.version() == 2),
            "{label}: {b:?}"
        );
        assert_eq!(second.metrics().to_map()["guard_waits"], 1, "{label}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_expired_marker_is_taken_over_and_the_old_holder_cannot_release_it() {
    for (label, raw) in backends() {
        let a = guard(raw.clone(), 1);
        let b = guard(raw.clone(), 2);
        let ta = a.try_acquire("quotes").await.unwrap().expect("a acquires");
        assert!(
            b.try_acquire("quotes").await.unwrap().is_none(),
            "{label}: held"
        );
        tokio::time::sleep(Duration::from_secs(31)).await;
        let tb = b
            .try_acquire("quotes")
            .await
            .unwrap()
            .expect("b takes over");
        // a's release must not remove b's marker.
        a.release("quotes", ta).await.unwrap();
        assert!(
            raw.head("snapshots/quotes/building").await.is_ok(),
            "{label}"
        );
        assert!(a.try_acquire("quotes").await.unwrap().is_none(), "{label}");
        b.release("quotes", tb).await.unwrap();
        assert!(
            raw.head("snapshots/quotes/building").await.is_err(),
            "{label}"
        );
        assert!(a.try_acquire("quotes").await.unwrap().is_some(), "{label}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_crashed_holder_delays_the_next_build_only_until_its_marker_expires() {
    for (label, raw) in backends() {
        // A worker took the guard and died without releasing it.
        let crashed = guard(raw.clone(), 1);
        crashed
            .try_acquire("quotes")
            .await
            .unwrap()
            .expect("acquired");
        let s = Snapshots::with_config(raw.clone(), config(2).with_guard(guard(raw.clone(), 2)));
        let t0 = tokio::time::Instant::now();
        let out = s
            .publish("quotes", |ctx| async move { Ok(body(ctx.version, "next")) })
            .await
            .unwrap();
        assert_eq!(out.version(), 1, "{label}");
        assert!(out.is_published(), "{label}");
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
            "{label}: waited {waited:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_unavailable_guard_store_does_not_stop_publishing() {
    for (label, raw) in backends() {
        let down = Arc::new(crate::wrappers::Outage::new(raw.clone()));
        down.set_down(true);
        let s = Snapshots::with_config(raw.clone(), config(1).with_guard(guard(down.clone(), 1)));
        let out = s
            .publish(
                "quotes",
                |ctx| async move { Ok(body(ctx.version, "unguarded")) },
            )
            .await
            .unwrap();
        assert!(out.is_published(), "{label}: {out:?}");
        assert!(down.failed_calls() > 0, "{label}");
    }
}

/// The same one-build guarantee with the guard backed by a real lease.
#[tokio::test(start_paused = true)]
async fn ten_publishers_behind_a_lease_build_once() {
    use ifmatch::lease::Leases;
    use ifmatch::snapshot::LeaseBuildGuard;
    for (label, raw) in backends() {
        let builds = Arc::new(AtomicU32::new(0));
        let publishers: Vec<Snapshots> = (0..10)
            .map(|i| {
                let leases = Leases::new(raw.clone())
                    .with_clock(crate::clock())
                    .with_rng(SharedRng::seeded(900 + i));
                let guard = Arc::new(LeaseBuildGuard::new(leases, Duration::from_secs(30)));
                Snapshots::with_config(raw.clone(), config(i).with_guard(guard))
            })
            .collect();
        let runs = publishers.iter().map(|s| {
            let builds = builds.clone();
            async move {
                s.publish("quotes", |ctx| {
                    builds.fetch_add(1, Ordering::SeqCst);
                    async move {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        Ok::<_, ifmatch::error::BoxError>(body(ctx.version, "leased"))
                    }
                })
                .await
                .unwrap()
            }
        });
        let outcomes = join_all(runs).await;
        assert_eq!(builds.load(Ordering::SeqCst), 1, "{label}: one build");
        assert_eq!(
            outcomes.iter().filter(|o| o.is_published()).count(),
            1,
            "{label}"
        );
        assert!(
            outcomes.iter().all(|o| o.version() == 1),
            "{label}: {outcomes:?}"
        );
        // The lease was released: it can be taken at once.
        let leases = Leases::new(raw.clone()).with_clock(crate::clock());
        leases
            .acquire(
                "snapshot-build/quotes",
                Duration::from_secs(5),
                Duration::ZERO,
            )
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
    }
}

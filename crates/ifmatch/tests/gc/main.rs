//! `ifmatch::gc`: expired leases, idempotency records and sessions are
//! removed on every backend, live ones and records without an expiry are
//! kept, a record renewed between the read and the delete is kept, and
//! sweeps do bounded work and resume where they stopped.
//!
//! Before the collector existed these records stayed for ever on `file://`,
//! `memory://` and `s3://` (only DynamoDB's TTL removed them).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ifmatch::clock::ManualClock;
use ifmatch::gc::{Collector, SweepReport};
use ifmatch::idempotency::{Idempotency, Outcome};
use ifmatch::lease::Leases;
use ifmatch::store::{DynStore, PutOptions, list_all};

#[path = "../common/backends.rs"]
mod backends;
#[path = "../common/hooked.rs"]
mod hooked;

use backends::backends;
use hooked::{Hook, Hooked, Write};

fn start() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

async fn keys(store: &DynStore, prefix: &str) -> BTreeSet<String> {
    list_all(&**store, prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

#[tokio::test]
async fn expired_records_go_and_live_ones_stay() {
    for (backend, store) in backends().await {
        let clock = Arc::new(ManualClock::new(start()));
        let leases = Leases::new(store.clone()).with_clock(clock.clone());
        let idem = Idempotency::new(store.clone())
            .with_clock(clock.clone())
            .with_completed_ttl(Duration::from_secs(3600))
            .with_in_progress_timeout(Duration::from_secs(600));
        let collector = Collector::new(store.clone())
            .with_clock(clock.clone())
            .with_grace(Duration::from_secs(60));

        let short = leases
            .acquire("short", Duration::from_secs(1), Duration::ZERO)
            .await
            .unwrap();
        leases.release(&short).await.unwrap();
        leases
            .acquire("long", Duration::from_secs(10 * 86_400), Duration::ZERO)
            .await
            .unwrap();
        let done = idem
            .run("done", &1, || async {
                Ok::<_, std::io::Error>("result".to_string())
            })
            .await
            .unwrap();
        assert!(matches!(done, Outcome::Executed(_)));
        idem.claim("stuck", &2).await.unwrap();
        store
            .put("leases/written-by-hand", "{}".into(), PutOptions::any())
            .await
            .unwrap();

        // Nothing has expired yet.
        let r = collector.collect_all().await.unwrap();
        assert_eq!(
            (r.examined, r.deleted, r.live),
            (5, 0, 5),
            "{backend}: {r:?}"
        );

        // A day (the lease retention) and a few minutes later.
        clock.advance(Duration::from_secs(86_400 + 180));
        let r = collector.collect_all().await.unwrap();
        assert_eq!(
            (r.examined, r.deleted, r.live),
            (5, 3, 2),
            "{backend}: {r:?}"
        );
        assert_eq!(
            keys(&store, "").await,
            set(&["leases/long", "leases/written-by-hand"]),
            "{backend}"
        );
        // What was removed is as good as expired: a new holder gets a greater
        // fencing token, and the key runs its handler again.
        let again = leases
            .acquire("short", Duration::from_secs(1), Duration::ZERO)
            .await
            .unwrap();
        assert!(again.token() > short.token(), "{backend}");
        let rerun = idem
            .run("done", &1, || async {
                Ok::<_, std::io::Error>("again".to_string())
            })
            .await
            .unwrap();
        assert_eq!(rerun, Outcome::Executed("again".to_string()), "{backend}");
    }
}

#[tokio::test]
async fn a_record_renewed_meanwhile_is_never_deleted() {
    for (backend, store) in backends().await {
        for key in ["sessions/renewed", "sessions/expired"] {
            store
                .put(key, "old".into(), PutOptions::any().with_expiry(Some(1)))
                .await
                .unwrap();
        }
        // Renewed (a fresh write) just before the collector's delete of it.
        let inner = store.clone();
        let renew: Hook = Arc::new(move |key, write| {
            let (inner, key) = (inner.clone(), key.to_string());
            Box::pin(async move {
                if write == Write::Delete && key == "sessions/renewed" {
                    let renewed = PutOptions::any().with_expiry(Some(u64::from(u32::MAX)));
                    inner.put(&key, "renewed".into(), renewed).await.unwrap();
                }
            })
        });
        let racing: DynStore = Hooked::new(store.clone(), renew);
        let r = Collector::new(racing)
            .with_prefixes(["sessions/"])
            .collect_all()
            .await
            .unwrap();
        assert_eq!((r.deleted, r.renewed), (1, 1), "{backend}: {r:?}");
        let kept = store.get("sessions/renewed").await.unwrap();
        assert_eq!(&kept.body[..], b"renewed", "{backend}");
        assert!(store.head("sessions/expired").await.is_err(), "{backend}");
    }
}

#[tokio::test]
async fn sweeps_do_bounded_work_and_resume_where_they_stopped() {
    for (backend, store) in backends().await {
        for i in 0..25 {
            store
                .put(
                    &format!("sessions/s{i:02}"),
                    "x".into(),
                    PutOptions::any().with_expiry(Some(1)),
                )
                .await
                .unwrap();
        }
        for i in 0..5 {
            let live = PutOptions::any().with_expiry(Some(u64::from(u32::MAX)));
            store
                .put(&format!("leases/l{i}"), "x".into(), live)
                .await
                .unwrap();
        }
        let collector = Collector::new(store.clone())
            .with_prefixes(["leases/", "sessions/"])
            .with_page_size(4);
        let mut total = SweepReport::default();
        let mut sweeps = 0;
        while total.passes == 0 {
            let r = collector.sweep(10).await.unwrap();
            assert!(r.examined <= 10, "{backend}: a sweep did {r:?}");
            total.examined += r.examined;
            total.deleted += r.deleted;
            total.live += r.live;
            total.passes += r.passes;
            sweeps += 1;
            assert!(sweeps <= 4, "{backend}: no end in sight: {total:?}");
        }
        assert_eq!(
            (total.examined, total.deleted, total.live),
            (30, 25, 5),
            "{backend}"
        );
        assert!(keys(&store, "sessions/").await.is_empty(), "{backend}");
        assert_eq!(keys(&store, "leases/").await.len(), 5, "{backend}");
        // The next pass starts over and finds only the live ones.
        let r = collector.sweep(100).await.unwrap();
        assert_eq!((r.examined, r.deleted, r.passes), (5, 0, 1), "{backend}");
    }
}

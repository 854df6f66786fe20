//! `ifmatch::artifact`: uploads published over an expected version, reads
//! that skip the body when the reader's copy is current, the build lease.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ifmatch::artifact::{
    self, ArtifactError, BuildTurn, Latest, acquire_build, latest_unless, publish_upload,
};
use ifmatch::clock::SharedRng;
use ifmatch::lease::{LeaseError, Leases};
use ifmatch::snapshot::{BuildGuard, LeaseBuildGuard, SnapshotError, VersionInfo};

use crate::backends::local_backends as backends;
use crate::wrappers::Counting;
use crate::{body, snapshots};

fn leases(store: &ifmatch::DynStore, seed: u64) -> Leases {
    Leases::new(store.clone())
        .with_clock(crate::clock())
        .with_rng(SharedRng::seeded(seed))
        .with_poll_interval(Duration::from_millis(100))
}

#[tokio::test(start_paused = true)]
async fn uploads_publish_over_the_expected_version_only() {
    for (label, store) in backends() {
        let s = snapshots(store.clone(), 1);
        // The first upload: only if nothing is published (If-None-Match: *).
        let out = publish_upload(&s, "quotes", body(1, "java"), |v| v.is_none())
            .await
            .unwrap();
        assert_eq!(out.version(), 1, "{label}");
        assert!(out.is_published(), "{label}");
        let err = publish_upload(&s, "quotes", body(1, "again"), |v| v.is_none())
            .await
            .unwrap_err();
        match &err {
            ArtifactError::Precondition { name, current } => {
                assert_eq!((name.as_str(), *current), ("quotes", Some(1)), "{label}")
            }
            other => panic!("{label}: {other:?}"),
        }
        assert!(err.to_string().contains("current version is 1"), "{label}");
        // Over version 1: lands as 2; over 1 again: refused, naming 2.
        let out = publish_upload(&s, "quotes", body(2, "java"), |v| v == Some(1))
            .await
            .unwrap();
        assert_eq!(out.version(), 2, "{label}");
        assert!(matches!(
            publish_upload(&s, "quotes", Bytes::from_static(b"x"), |v| v == Some(1)).await,
            Err(ArtifactError::Precondition {
                current: Some(2),
                ..
            })
        ));
        // Unconditional: on top of whatever is there.
        let out = publish_upload(&s, "quotes", body(3, "any"), |_| true)
            .await
            .unwrap();
        assert_eq!(out.version(), 3, "{label}");
        assert_eq!(s.latest("quotes").await.unwrap().body, body(3, "any"));
        // A bad name is the snapshot module's error.
        assert!(matches!(
            publish_upload(&s, "no/slash", Bytes::new(), |_| true).await,
            Err(ArtifactError::Snapshot(SnapshotError::InvalidName { .. }))
        ));
    }
}

#[tokio::test(start_paused = true)]
async fn a_current_reader_costs_one_small_request() {
    for (label, raw) in backends() {
        let store = Arc::new(Counting::new(raw));
        let s = snapshots(store.clone(), 1);
        publish_upload(&s, "quotes", body(1, "a"), |_| true)
            .await
            .unwrap();
        let (gets_before, body_gets) = (store.count("get", "head"), store.count("get", "body"));
        // The reader has version 1: one GET of the head, no body.
        let got = latest_unless(&s, "quotes", Some(|i: &VersionInfo| i.version == 1))
            .await
            .unwrap();
        let Latest::Fresh(info) = got else {
            panic!("{label}: {got:?}")
        };
        assert_eq!(info.version, 1, "{label}");
        assert_eq!(store.count("get", "head"), gets_before + 1, "{label}");
        assert_eq!(store.count("get", "body"), body_gets, "{label}");
        // A stale reader gets the body.
        let got = latest_unless(&s, "quotes", Some(|i: &VersionInfo| i.version == 0))
            .await
            .unwrap();
        let Latest::Full(snap) = got else {
            panic!("{label}: {got:?}")
        };
        assert_eq!((snap.version(), snap.body), (1, body(1, "a")), "{label}");
        assert_eq!(store.count("get", "body"), body_gets + 1, "{label}");
        // Without a check: the latest, head and body.
        let got = latest_unless(&s, "quotes", None::<fn(&VersionInfo) -> bool>)
            .await
            .unwrap();
        assert!(matches!(got, Latest::Full(_)), "{label}");
        assert!(matches!(
            latest_unless(&s, "nothing", Some(|_: &VersionInfo| true)).await,
            Err(ArtifactError::Snapshot(SnapshotError::NotFound { .. }))
        ));
    }
}

#[tokio::test(start_paused = true)]
async fn the_build_lease_is_the_lease_build_guards_lease() {
    for (label, store) in backends() {
        let s = snapshots(store.clone(), 1);
        let l = leases(&store, 2);
        let ttl = Duration::from_secs(30);
        // An in-process publisher's guard holds it: an uploader is told.
        let guard = LeaseBuildGuard::new(leases(&store, 3), ttl);
        let ticket = guard.try_acquire("quotes").await.unwrap().unwrap();
        let err = acquire_build(&s, &l, "quotes", ttl, Duration::ZERO)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ArtifactError::Lease(LeaseError::Held { .. })),
            "{label}: {err:?}"
        );
        guard.release("quotes", ticket).await.unwrap();
        // Free: the uploader builds, and the guard waits for it.
        let BuildTurn::Build(lease) = acquire_build(&s, &l, "quotes", ttl, Duration::ZERO)
            .await
            .unwrap()
        else {
            panic!("{label}")
        };
        assert_eq!(lease.name(), artifact::build_lease_name("quotes"));
        assert!(
            guard.try_acquire("quotes").await.unwrap().is_none(),
            "{label}"
        );
        l.release(&lease).await.unwrap();
    }
}

/// A waiter whose builder published a build started after it asked does not build.
#[tokio::test(start_paused = true)]
async fn a_waiter_is_superseded_by_the_build_it_waited_for() {
    for (label, store) in backends() {
        let s = snapshots(store.clone(), 1);
        let ttl = Duration::from_secs(30);
        let builder = leases(&store, 2);
        let BuildTurn::Build(held) = acquire_build(&s, &builder, "quotes", ttl, Duration::ZERO)
            .await
            .unwrap()
        else {
            panic!("{label}")
        };
        let waiter = leases(&store, 3);
        let wait = acquire_build(&s, &waiter, "quotes", ttl, Duration::from_secs(10));
        let build = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            publish_upload(&s, "quotes", body(1, "builder"), |_| true)
                .await
                .unwrap();
            builder.release(&held).await.unwrap();
        };
        let (turn, ()) = tokio::join!(wait, build);
        match turn.unwrap() {
            BuildTurn::Superseded(info) => assert_eq!(info.version, 1, "{label}"),
            other => panic!("{label}: {other:?}"),
        }
        // The waiter gave the lease back: the next one builds at once.
        assert!(matches!(
            acquire_build(&s, &waiter, "quotes", ttl, Duration::ZERO).await,
            Ok(BuildTurn::Build(_))
        ));
    }
}

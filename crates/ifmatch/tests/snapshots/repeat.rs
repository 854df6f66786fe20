//! Repeated requests: a publish or rollback repeated with its request id
//! after a lost answer adds no version, on every backend.

use std::sync::Arc;

use ifmatch::ErrorKind;
use ifmatch::snapshot::{PublishOutcome, Published, SnapshotError, Snapshots};

use crate::lost_answer::LostAnswer;
use crate::{body, config, snapshots};

async fn publish_once(s: &Snapshots, id: &str, by: &str) -> Result<PublishOutcome, SnapshotError> {
    let by = by.to_string();
    s.publish_once("quotes", id, move |ctx| {
        let by = by.clone();
        async move { Ok(body(ctx.version, &by)) }
    })
    .await
}

fn published(out: PublishOutcome) -> Published {
    match out {
        PublishOutcome::Published(p) => p,
        other => panic!("not published: {other:?}"),
    }
}

async fn retained(s: &Snapshots) -> Vec<u64> {
    s.versions("quotes")
        .await
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect()
}

async fn by(s: &Snapshots, version: u64) -> String {
    let snap = s.get("quotes", Some(version)).await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&snap.body).unwrap();
    json["by"].as_str().unwrap().to_string()
}

/// The head write of the first publish lands but its answer is lost, and the
/// store then fails, so the publish cannot tell: `Ambiguous`. Repeated with
/// the same request id (here by another worker) it is answered with the
/// version the first one created; nothing is built or published again.
#[tokio::test]
async fn a_publish_repeated_with_its_id_after_a_lost_answer_adds_no_version_on_every_backend() {
    crate::use_manual_clock();
    for (label, raw) in crate::backends::backends().await {
        let lossy = Arc::new(LostAnswer::new(raw.clone(), "snapshots/", "/head"));
        let first = snapshots(lossy.clone(), 1);
        let err = publish_once(&first, "req-1", "first").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Ambiguous, "{label}: {err}");
        assert_eq!(lossy.lost(), 1, "{label}: the head write's answer was lost");
        lossy.restore();

        let again = snapshots(raw.clone(), 2);
        let p = published(publish_once(&again, "req-1", "again").await.unwrap());
        assert!(p.replayed, "{label}: {p:?}");
        assert_eq!(p.version(), 1, "{label}");
        assert_eq!(p.info.request_id.as_deref(), Some("req-1"), "{label}");
        assert_eq!(retained(&again).await, vec![1], "{label}: one version");
        assert_eq!(by(&again, 1).await, "first", "{label}");
        let m = again.metrics().to_map();
        assert_eq!(
            (m["builds"], m["published"], m["replayed"]),
            (0, 0, 1),
            "{label}"
        );

        // The same id again, through the worker that lost the answer: still one version.
        let p = published(publish_once(&first, "req-1", "third").await.unwrap());
        assert!(p.replayed && p.version() == 1, "{label}: {p:?}");
        // Another id is another publish.
        let p = published(publish_once(&again, "req-2", "second").await.unwrap());
        assert!(!p.replayed, "{label}");
        assert_eq!(p.version(), 2, "{label}");
        assert_eq!(retained(&again).await, vec![2, 1], "{label}");
    }
}

/// The same for a rollback, and the repeat is recognised even after its
/// version fell out of the retained window (and the version it rolled back
/// from is gone).
#[tokio::test]
async fn a_rollback_repeated_with_its_id_after_a_lost_answer_adds_no_version_on_every_backend() {
    crate::use_manual_clock();
    for (label, raw) in crate::backends::backends().await {
        let s = Snapshots::with_config(raw.clone(), config(1).with_keep(3));
        for word in ["one", "two"] {
            publish_once(&s, word, word).await.unwrap();
        }
        let lossy = Arc::new(LostAnswer::new(raw.clone(), "snapshots/", "/head"));
        let first = Snapshots::with_config(lossy.clone(), config(2).with_keep(3));
        let err = first.rollback_once("quotes", 1, "rb-1").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Ambiguous, "{label}: {err}");
        assert_eq!(lossy.lost(), 1, "{label}");
        lossy.restore();

        let p = first.rollback_once("quotes", 1, "rb-1").await.unwrap();
        assert!(p.replayed, "{label}: {p:?}");
        assert_eq!(
            (p.version(), p.info.rolled_back_from),
            (3, Some(1)),
            "{label}"
        );
        assert_eq!(
            retained(&s).await,
            vec![3, 2, 1],
            "{label}: one new version"
        );
        assert_eq!(by(&s, 3).await, "one", "{label}");

        // Five more publishes push version 3 (and version 1) out of the window.
        for n in 0..5 {
            publish_once(&s, &format!("more-{n}"), "more")
                .await
                .unwrap();
        }
        assert_eq!(retained(&s).await, vec![8, 7, 6], "{label}");
        let p = first.rollback_once("quotes", 1, "rb-1").await.unwrap();
        assert!(p.replayed, "{label}: {p:?}");
        assert_eq!(p.version(), 3, "{label}");
        assert_eq!(
            retained(&s).await,
            vec![8, 7, 6],
            "{label}: still no new version"
        );
        // An id that was never used asks for the pruned version 1: not retained.
        let err = first.rollback_once("quotes", 1, "rb-2").await.unwrap_err();
        assert!(
            matches!(err, SnapshotError::VersionNotRetained { version: 1, .. }),
            "{label}: {err}"
        );
    }
}

/// Request ids are 1–128 printable ASCII characters.
#[tokio::test(start_paused = true)]
async fn request_ids_are_validated() {
    let s = snapshots(Arc::new(ifmatch::store::memory::MemoryStore::new()), 1);
    for bad in ["", "caf\u{e9}", "a\nb", &"x".repeat(129)] {
        let err = publish_once(&s, bad, "x").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid, "{bad:?}: {err}");
        let err = s.rollback_once("quotes", 1, bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid, "{bad:?}: {err}");
    }
    assert!(matches!(
        s.versions("quotes").await,
        Err(SnapshotError::NotFound { .. })
    ));
}

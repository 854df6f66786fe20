//! Reading: the single-flight cache, conditional checks, outages, typed JSON.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use ifmatch::DynStore;
use ifmatch::ErrorKind;
use ifmatch::snapshot::{SnapshotError, SnapshotReader, Snapshots};
use serde::Deserialize;

use crate::backends::local_backends as backends;
use crate::wrappers::{Counting, Outage};
use crate::{body, snapshots};

/// Past the default 5 s check interval.
const PAST_INTERVAL: Duration = Duration::from_secs(6);

async fn publish(s: &Snapshots, name: &str) -> u64 {
    s.publish(name, |ctx| async move { Ok(body(ctx.version, "w")) })
        .await
        .unwrap()
        .version()
}

/// 100 concurrent callers of one reader: one head read and one body download.
async fn hundred(reader: &Arc<SnapshotReader>) -> Vec<u64> {
    let tasks = (0..100).map(|_| {
        let r = reader.clone();
        tokio::spawn(async move { r.latest().await.unwrap().version })
    });
    join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_hundred_concurrent_readers_share_one_download() {
    for (label, raw) in backends() {
        hundred_readers_share_one_download(label, raw).await;
    }
}

#[tokio::test]
async fn a_hundred_concurrent_readers_share_one_download_on_every_backend() {
    crate::use_manual_clock();
    for (label, raw) in crate::backends::backends().await {
        hundred_readers_share_one_download(label, raw).await;
    }
}

/// 100 concurrent readers after a publish: one download per reader cache.
async fn hundred_readers_share_one_download(label: &str, raw: DynStore) {
    let publisher = snapshots(raw.clone(), 1);
    publish(&publisher, "quotes").await;

    let counted = Arc::new(Counting::new(raw.clone()));
    let readers = snapshots(counted.clone(), 2);
    let reader = Arc::new(readers.reader("quotes").unwrap());
    assert!(hundred(&reader).await.iter().all(|v| *v == 1), "{label}");
    assert_eq!(counted.count("get", "body"), 1, "{label}: one download");
    assert_eq!(counted.count("get", "head"), 1, "{label}: one head read");
    assert_eq!(counted.count("get_if_changed", "head"), 0, "{label}");

    // A second reader cache (another process, say) downloads once too.
    let other = Arc::new(readers.reader("quotes").unwrap());
    assert!(hundred(&other).await.iter().all(|v| *v == 1), "{label}");
    assert_eq!(counted.count("get", "body"), 2, "{label}");

    // A new version within the check interval is not seen yet, at no cost.
    publish(&publisher, "quotes").await;
    assert!(hundred(&reader).await.iter().all(|v| *v == 1), "{label}");
    assert_eq!(counted.count("get", "body"), 2, "{label}");
    assert_eq!(counted.count("get_if_changed", "head"), 0, "{label}");

    // After the interval: one conditional check, one download, for all 100.
    crate::clock().sleep(PAST_INTERVAL).await;
    assert!(hundred(&reader).await.iter().all(|v| *v == 2), "{label}");
    assert_eq!(counted.count("get_if_changed", "head"), 1, "{label}");
    assert_eq!(counted.count("get", "body"), 3, "{label}");

    // Nothing new: one conditional check answered "unchanged", no body.
    crate::clock().sleep(PAST_INTERVAL).await;
    assert!(hundred(&reader).await.iter().all(|v| *v == 2), "{label}");
    assert_eq!(counted.count("get_if_changed", "head"), 2, "{label}");
    assert_eq!(counted.count("get", "body"), 3, "{label}");
    let m = reader.metrics().to_map();
    assert_eq!(
        (m["checks"], m["unchanged"], m["downloads"]),
        (3, 1, 2),
        "{label}"
    );
}

#[tokio::test(start_paused = true)]
async fn during_an_outage_the_last_good_snapshot_is_served_with_its_age() {
    for (label, raw) in backends() {
        outage_serves_the_last_good_snapshot(label, raw).await;
    }
}

#[tokio::test]
async fn during_an_outage_the_last_good_snapshot_is_served_on_every_backend() {
    crate::use_manual_clock();
    for (label, raw) in crate::backends::backends().await {
        outage_serves_the_last_good_snapshot(label, raw).await;
    }
}

/// During a store outage the last good snapshot is served, with its age.
async fn outage_serves_the_last_good_snapshot(label: &str, raw: DynStore) {
    let publisher = snapshots(raw.clone(), 1);
    publish(&publisher, "quotes").await;
    let outage = Arc::new(Outage::new(raw.clone()));
    let reader = snapshots(outage.clone(), 2).reader("quotes").unwrap();

    let fresh = reader.latest().await.unwrap();
    assert_eq!((fresh.version, fresh.age), (1, Duration::ZERO), "{label}");
    assert!(!fresh.is_stale());

    outage.set_down(true);
    crate::clock().sleep(PAST_INTERVAL).await;
    let stale = reader.latest().await.unwrap();
    assert_eq!(stale.version, 1, "{label}");
    assert_eq!(stale.age, PAST_INTERVAL, "{label}");
    let why = stale.stale.as_ref().expect("marked stale");
    assert_eq!(why.kind(), ErrorKind::Unavailable, "{label}: {why}");
    assert_eq!(outage.failed_calls(), 1, "{label}");
    // Within the interval the failing store is not asked again.
    crate::clock().sleep(Duration::from_secs(1)).await;
    let again = reader.latest().await.unwrap();
    assert!(again.is_stale(), "{label}");
    assert_eq!(again.age, PAST_INTERVAL + Duration::from_secs(1), "{label}");
    assert_eq!(outage.failed_calls(), 1, "{label}");

    // A reader that never saw a snapshot has nothing to serve.
    let cold = snapshots(outage.clone(), 3).reader("quotes").unwrap();
    let err = cold.latest().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{label}: {err}");

    // Back up, with a new version: served fresh again.
    outage.set_down(false);
    publish(&publisher, "quotes").await;
    crate::clock().sleep(PAST_INTERVAL).await;
    let back = reader.latest().await.unwrap();
    assert_eq!((back.version, back.age), (2, Duration::ZERO), "{label}");
    assert!(!back.is_stale(), "{label}");
    assert!(reader.metrics().to_map()["stale_served"] >= 2, "{label}");
}

#[derive(Debug, Deserialize)]
struct Quotes {
    version: u64,
    by: String,
}

#[tokio::test(start_paused = true)]
async fn the_json_reader_parses_each_version_once() {
    for (label, raw) in backends() {
        let s = snapshots(raw.clone(), 1);
        publish(&s, "quotes").await;
        let reader = Arc::new(s.json_reader::<Quotes>("quotes").unwrap());
        let tasks = (0..50).map(|_| {
            let r = reader.clone();
            tokio::spawn(async move { r.latest().await.unwrap().value })
        });
        let values: Vec<Arc<Quotes>> = join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert!(
            values.iter().all(|v| Arc::ptr_eq(v, &values[0])),
            "{label}: one shared parse"
        );
        assert_eq!(
            (values[0].version, values[0].by.as_str()),
            (1, "w"),
            "{label}"
        );
        assert_eq!(reader.reader().metrics().to_map()["parses"], 1, "{label}");

        publish(&s, "quotes").await;
        let v2 = reader.refresh().await.unwrap();
        assert_eq!(v2.value.version, 2, "{label}");
        assert_eq!(reader.latest().await.unwrap().value.version, 2, "{label}");
        assert_eq!(reader.reader().metrics().to_map()["parses"], 2, "{label}");

        // A body that is not the requested type is a decode error.
        s.publish("quotes", |_| async {
            Ok::<_, ifmatch::error::BoxError>("not json".into())
        })
        .await
        .unwrap();
        let err = reader.refresh().await.unwrap_err();
        assert!(
            matches!(err, SnapshotError::Decode { version: 3, .. }),
            "{label}: {err}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn refresh_sees_a_new_version_at_once_and_nothing_published_is_not_found() {
    for (label, raw) in backends() {
        let s = snapshots(raw.clone(), 1);
        let reader = s.reader("quotes").unwrap();
        let err = reader.latest().await.unwrap_err();
        assert!(
            matches!(err, SnapshotError::NotFound { .. }),
            "{label}: {err}"
        );
        publish(&s, "quotes").await;
        // Within the interval, latest() still answers from the last check; refresh() asks now.
        assert!(reader.latest().await.is_err(), "{label}");
        assert_eq!(reader.refresh().await.unwrap().version, 1, "{label}");
        publish(&s, "quotes").await;
        assert_eq!(reader.latest().await.unwrap().version, 1, "{label}");
        assert_eq!(reader.refresh().await.unwrap().version, 2, "{label}");
    }
}

/// A reader that read the head just before that version's body was pruned
/// (keep = 1 and a new publish in between) re-reads the head and gets the new one.
#[tokio::test(start_paused = true)]
async fn a_reader_racing_the_pruning_of_its_version_reads_the_newer_one() {
    use crate::wrappers::BeforeFirstBodyGet;
    use futures::FutureExt;
    for (label, raw) in backends() {
        let publisher = Snapshots::with_config(raw.clone(), crate::config(1).with_keep(1));
        publish(&publisher, "quotes").await;
        let p = publisher.clone();
        let racing = Arc::new(BeforeFirstBodyGet::new(
            raw.clone(),
            async move {
                publish(&p, "quotes").await;
            }
            .boxed(),
        ));
        let reader = snapshots(racing.clone(), 2).reader("quotes").unwrap();
        let got = reader.latest().await.unwrap();
        assert_eq!(got.version, 2, "{label}");
        assert_eq!(
            publisher.versions("quotes").await.unwrap().len(),
            1,
            "{label}"
        );
        // The one-shot uncached read path retries the same way.
        let racing = Arc::new(BeforeFirstBodyGet::new(raw.clone(), {
            let p = publisher.clone();
            async move {
                publish(&p, "quotes").await;
            }
            .boxed()
        }));
        let snap = snapshots(racing, 3).latest("quotes").await.unwrap();
        assert_eq!(snap.version(), 3, "{label}");
    }
}
